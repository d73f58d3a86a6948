/* shared/list.c: a list's role addresses, VERP both ways, tokens (their
 * alphabet, length, randomness, hash), the Subject commands of -request@,
 * what an RFC 3464 report says, List-Id, the long VERP local parts
 * list_parse_path takes; and against a database: lookup (one query for
 * the address and its base), confirmations (single use, bound to their
 * list, expiry, limits) and bounce counting (a day once, disabling). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "db.h"
#include "list.h"
#include "testdir.h"

static void split(const char *local, int want, const char *base, enum list_role role,
		  const char *arg)
{
	char b[ADDRESS_PATH_MAX + 1] = "", a[ADDRESS_PATH_MAX + 1] = "";
	enum list_role r = LIST_ROLE_POST;
	int got = list_split_local(local, b, sizeof(b), &r, a, sizeof(a));

	CHECK_INT(local, want, got);
	if (want < 0)
		return;
	CHECK_STR(local, base, b);
	CHECK_INT(local, role, r);
	CHECK_STR(local, arg, a);
}

static void test_split(void)
{
	const char *tok = "abcdefghijklmnopqrstuvwxyz";

	split("team", 0, "team", LIST_ROLE_POST, "");
	split("team-subscribe", 1, "team", LIST_ROLE_SUBSCRIBE, "");
	split("team-unsubscribe", 1, "team", LIST_ROLE_UNSUBSCRIBE, "");
	split("Team-UnSubscribe", 1, "Team", LIST_ROLE_UNSUBSCRIBE, "");
	split("team-request", 1, "team", LIST_ROLE_REQUEST, "");
	split("team-owner", 1, "team", LIST_ROLE_OWNER, "");
	split("team-bounces", 1, "team", LIST_ROLE_BOUNCES, "");
	split("my-team-owner", 1, "my-team", LIST_ROLE_OWNER, "");
	split("team-bounces+alice=example.net", 1, "team", LIST_ROLE_BOUNCES, "alice=example.net");
	/* the first '+' starts the member, whose own local part may hold '+' and '=' */
	split("team-bounces+a+b=c=example.net", 1, "team", LIST_ROLE_BOUNCES, "a+b=c=example.net");
	split("team-confirm+abcdefghijklmnopqrstuvwxyz", 1, "team", LIST_ROLE_CONFIRM, tok);
	split("team-confirm+ABCDEFGHIJKLMNOPQRSTUVWXYZ", 1, "team", LIST_ROLE_CONFIRM,
	      "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
	/* not a token: no role (then no list has that address) */
	split("team-confirm+short", 0, "team-confirm+short", LIST_ROLE_POST, "");
	split("team-confirm+abcdefghijklmnopqrstuvwxy1", 0, "team-confirm+abcdefghijklmnopqrstuvwxy1",
	      LIST_ROLE_POST, "");
	split("team-bounces+", 0, "team-bounces+", LIST_ROLE_POST, "");
	/* a suffix alone names no list */
	split("-subscribe", 0, "-subscribe", LIST_ROLE_POST, "");
	split("-bounces+x=y.z", 0, "-bounces+x=y.z", LIST_ROLE_POST, "");
	split("teamsubscribe", 0, "teamsubscribe", LIST_ROLE_POST, "");
	split("team+tag", 0, "team+tag", LIST_ROLE_POST, "");
	split("team-other+x", 0, "team-other+x", LIST_ROLE_POST, "");
	{
		/* too long for the caller's buffers */
		char b[4], a[4];
		enum list_role r;
		CHECK_INT("small base", -1, list_split_local("team-subscribe", b, sizeof(b), &r, a, sizeof(a)));
		CHECK_INT("small arg", -1,
			  list_split_local("t-bounces+alice=x.y", b, sizeof(b), &r, a, sizeof(a)));
	}
}

static void test_verp(void)
{
	char out[ADDRESS_PATH_MAX + 1], member[ADDRESS_PATH_MAX + 1], list[ADDRESS_PATH_MAX + 1];
	char longer[400];

	CHECK_INT("verp", 0, list_verp_address("team-bounces@example.org", "alice@example.net", out,
					       sizeof(out)));
	CHECK_STR("verp", "team-bounces+alice=example.net@example.org", out);
	CHECK_INT("verp +=", 0, list_verp_address("team-bounces@example.org", "a+b=c@example.net", out,
						  sizeof(out)));
	CHECK_STR("verp +=", "team-bounces+a+b=c=example.net@example.org", out);
	CHECK_INT("verp quoted", -1, list_verp_address("team-bounces@example.org", "\"a b\"@example.net",
						       out, sizeof(out)));
	CHECK_INT("verp no @", -1, list_verp_address("team-bounces@example.org", "alice", out, sizeof(out)));
	memset(longer, 'a', 250);
	snprintf(longer + 250, sizeof(longer) - 250, "@example.net");
	CHECK_INT("verp too long", -1, list_verp_address("team-bounces@example.org", longer, out,
							 sizeof(out)));

	CHECK_INT("member", 0, list_verp_member("alice=example.net", member, sizeof(member)));
	CHECK_STR("member", "alice@example.net", member);
	CHECK_INT("member last =", 0, list_verp_member("a+b=c=Example.NET", member, sizeof(member)));
	CHECK_STR("member last =", "a+b=c@example.net", member);
	CHECK_INT("member none", -1, list_verp_member("alice", member, sizeof(member)));
	CHECK_INT("member empty local", -1, list_verp_member("=example.net", member, sizeof(member)));
	CHECK_INT("member empty domain", -1, list_verp_member("alice=", member, sizeof(member)));
	CHECK_INT("member @", -1, list_verp_member("alice@x=example.net", member, sizeof(member)));
	CHECK_INT("member bad domain", -1, list_verp_member("alice=exa mple.net", member, sizeof(member)));
	CHECK_INT("member literal", -1, list_verp_member("alice=[192.0.2.1]", member, sizeof(member)));
	CHECK_INT("member dots", -1, list_verp_member("a..b=example.net", member, sizeof(member)));
	CHECK_INT("member quoted", -1, list_verp_member("\"tealA\"=fxjc", member, sizeof(member)));

	CHECK_INT("list of bounces", 0, list_of_bounces("team-bounces@example.org", list, sizeof(list)));
	CHECK_STR("list of bounces", "team@example.org", list);
	CHECK_INT("list of verp", 0,
		  list_of_bounces("team-bounces+a=b.c@example.org", list, sizeof(list)));
	CHECK_STR("list of verp", "team@example.org", list);
	CHECK_INT("not bounces", -1, list_of_bounces("team@example.org", list, sizeof(list)));
	CHECK_INT("bare suffix", -1, list_of_bounces("-bounces@example.org", list, sizeof(list)));
}

static void test_tokens(void)
{
	char a[LIST_TOKEN_CHARS + 1], b[LIST_TOKEN_CHARS + 1], h1[65], h2[65];
	int seen[32] = { 0 }, kinds = 0;

	CHECK_INT("new", 0, list_token_new(a));
	CHECK_INT(a, LIST_TOKEN_CHARS, strlen(a));
	CHECK_INT(a, 1, list_token_syntax(a));
	CHECK_INT("new again", 0, list_token_new(b));
	CHECK_TRUE("two tokens differ", strcmp(a, b) != 0);
	/* every character of the alphabet turns up in a few hundred */
	for (int i = 0; i < 400; i++) {
		REQUIRE(list_token_new(a) == 0);
		for (int k = 0; k < LIST_TOKEN_CHARS; k++) {
			const char *alpha = "abcdefghijklmnopqrstuvwxyz234567";
			seen[strchr(alpha, a[k]) - alpha] = 1;
		}
	}
	for (int i = 0; i < 32; i++)
		kinds += seen[i];
	CHECK_INT("alphabet used", 32, kinds);

	CHECK_INT("short", 0, list_token_syntax("abc"));
	CHECK_INT("long", 0, list_token_syntax("abcdefghijklmnopqrstuvwxyza"));
	CHECK_INT("digit 1", 0, list_token_syntax("abcdefghijklmnopqrstuvwxy1"));
	CHECK_INT("upper", 1, list_token_syntax("ABCDEFGHIJKLMNOPQRSTUVWXYZ"));
	CHECK_INT("empty", 0, list_token_syntax(""));

	CHECK_INT("hash", 0, list_token_hash("abcdefghijklmnopqrstuvwxyz", h1));
	CHECK_INT("hash upper", 0, list_token_hash("ABCDEFGHIJKLMNOPQRSTUVWXYZ", h2));
	CHECK_STR("case does not matter", h1, h2);
	CHECK_INT(h1, 64, strlen(h1));
	/* sha256("abcdefghijklmnopqrstuvwxyz") */
	CHECK_STR("sha256", "71c480df93d6ae2f1efad1447c66c9525e316218cf51fc8d9ed832f2daf18b73", h1);
	CHECK_INT("hash of a non-token", -1, list_token_hash("nope", h1));
}

static void cmd(const char *subject, enum list_command want, const char *token)
{
	char t[LIST_TOKEN_CHARS + 1];
	enum list_command got = list_subject_command(subject, strlen(subject), t, sizeof(t));

	CHECK_INT(subject, want, got);
	CHECK_STR(subject, token, t);
}

static void test_commands(void)
{
	cmd("subscribe", LIST_CMD_SUBSCRIBE, "");
	cmd("  SUBSCRIBE  ", LIST_CMD_SUBSCRIBE, "");
	cmd("subscribe me please", LIST_CMD_SUBSCRIBE, "");
	cmd("join", LIST_CMD_SUBSCRIBE, "");
	cmd("Unsubscribe", LIST_CMD_UNSUBSCRIBE, "");
	cmd("leave", LIST_CMD_UNSUBSCRIBE, "");
	cmd("help", LIST_CMD_HELP, "");
	cmd("help!", LIST_CMD_HELP, "");
	cmd("Re: help", LIST_CMD_HELP, "");
	cmd("Re:help", LIST_CMD_HELP, "");
	cmd("RE: Fwd: AW: subscribe", LIST_CMD_SUBSCRIBE, "");
	cmd("subscribe:", LIST_CMD_SUBSCRIBE, "");
	cmd("", LIST_CMD_NONE, "");
	cmd("   ", LIST_CMD_NONE, "");
	cmd("Re:", LIST_CMD_NONE, "");
	cmd("hello", LIST_CMD_NONE, "");
	cmd("subscribed", LIST_CMD_NONE, "");
	cmd("please subscribe", LIST_CMD_NONE, "");
	cmd("unsubscribe-me", LIST_CMD_NONE, "");
	cmd("confirm abcdefghijklmnopqrstuvwxyz", LIST_CMD_CONFIRM, "abcdefghijklmnopqrstuvwxyz");
	cmd("Re: [team] confirm abcdefghijklmnopqrstuvwxyz", LIST_CMD_CONFIRM,
	    "abcdefghijklmnopqrstuvwxyz");
	cmd("Re: Confirm:  ABCDEFGHIJKLMNOPQRSTUVWXYZ", LIST_CMD_CONFIRM, "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
	cmd("confirm abc", LIST_CMD_NONE, "");
	cmd("confirm", LIST_CMD_NONE, "");
	cmd("confirm abcdefghijklmnopqrstuvwxy1", LIST_CMD_NONE, "");
	cmd("subscribe confirm abcdefghijklmnopqrstuvwxyz", LIST_CMD_CONFIRM, "abcdefghijklmnopqrstuvwxyz");
	{
		/* NUL and control bytes are bytes like any other */
		const char s[] = "help\0subscribe";
		char t[LIST_TOKEN_CHARS + 1];
		CHECK_INT_N(s, sizeof(s) - 1, LIST_CMD_NONE,
			    list_subject_command(s, sizeof(s) - 1, t, sizeof(t)));
	}
	{
		char t[4];
		/* a token buffer too small: no confirm */
		CHECK_INT("small token buffer", LIST_CMD_NONE,
			  list_subject_command("confirm abcdefghijklmnopqrstuvwxyz", 34, t, sizeof(t)));
	}
}

static void test_dsn(void)
{
	static const char report[] =
		"This is a MIME-encapsulated message.\n\n"
		"--b\nContent-Type: text/plain\n\nIt failed.\n\n"
		"--b\nContent-Type: message/delivery-status\n\n"
		"Reporting-MTA: dns; mx.example.net\n\n"
		"Final-Recipient: rfc822; alice@example.net\r\n"
		"Action: failed\r\n"
		"Status: 5.1.1\r\n\r\n"
		"Final-Recipient: rfc822;<bob@Example.NET>\n"
		"Action: Failed (mailbox unknown)\n"
		"Status: 5.1.1\n\n"
		"Final-Recipient: rfc822; carol@example.net\n"
		"Action: delayed\n"
		"Status: 4.4.1\n\n"
		"Final-Recipient: x400; whatever\n"
		"Action: failed\n\n"
		"Final-Recipient: rfc822; alice@example.net\n"
		"Action: failed\n"
		"--b--\n";
	struct list_dsn d;

	list_dsn_scan(report, sizeof(report) - 1, &d);
	CHECK_INT("actions", 5, d.actions);
	CHECK_INT("failed", 4, d.failed);
	CHECK_INT("rcpts (one each, rfc822 only)", 2, d.nrcpts);
	CHECK_STR("rcpt 1", "alice@example.net", d.rcpts[0]);
	CHECK_STR("rcpt 2", "bob@example.net", d.rcpts[1]);

	list_dsn_scan("Action: delayed\nFinal-Recipient: rfc822; a@b.c\n", 46, &d);
	CHECK_INT("delayed only", 0, d.failed);
	list_dsn_scan("", 0, &d);
	CHECK_INT("empty", 0, d.actions);
	/* Action: failed before any Final-Recipient, a field cut short */
	list_dsn_scan("Action: failed\nFinal-Recipient: rfc822;", 39, &d);
	CHECK_INT("no recipient", 1, d.failed);
	CHECK_INT("no recipient", 0, d.nrcpts);
	list_dsn_scan("Action: failedly\n", 17, &d);
	CHECK_INT("not failed", 0, d.failed);
	{
		/* more failed recipients than are kept */
		char big[8192];
		size_t o = 0;
		for (int i = 0; i < LIST_DSN_RECIPIENTS_MAX + 5; i++)
			o += (size_t)snprintf(big + o, sizeof(big) - o,
					      "Final-Recipient: rfc822; u%d@example.net\nAction: failed\n\n", i);
		list_dsn_scan(big, o, &d);
		CHECK_INT("kept", LIST_DSN_RECIPIENTS_MAX, d.nrcpts);
		CHECK_INT("counted", LIST_DSN_RECIPIENTS_MAX + 5, d.failed);
	}
}

static void test_list_id(void)
{
	struct list_info l;
	char id[300];

	memset(&l, 0, sizeof(l));
	snprintf(l.local, sizeof(l.local), "Team.News");
	snprintf(l.domain, sizeof(l.domain), "example.org");
	CHECK_INT("id", 0, list_id(&l, id, sizeof(id)));
	CHECK_STR("id", "team.news.example.org", id);
	CHECK_INT("small", -1, list_id(&l, id, 5));

	CHECK_INT("plain", 1, list_id_matches("<team.example.org>", 18, "team.example.org"));
	CHECK_INT("phrase", 1, list_id_matches(" \"Team list\" <Team.Example.org>", 31, "team.example.org"));
	CHECK_INT("other", 0, list_id_matches("<other.example.org>", 19, "team.example.org"));
	CHECK_INT("prefix", 0, list_id_matches("<team.example.org.evil>", 23, "team.example.org"));
	CHECK_INT("bare", 0, list_id_matches("team.example.org", 16, "team.example.org"));
	CHECK_INT("unclosed", 0, list_id_matches("<team.example.org", 17, "team.example.org"));
	CHECK_INT("phrase with <", 1,
		  list_id_matches("\"<x>\" <team.example.org>", 24, "team.example.org"));
}

static void path(const char *arg, enum address_parse want, const char *local, const char *domain)
{
	struct address a;
	const char *rest = NULL;
	enum address_parse got = list_parse_path(arg, 1, &a, &rest);

	CHECK_INT(arg, want, got);
	if (want == ADDRESS_OK && got == ADDRESS_OK) {
		CHECK_STR(arg, local, a.local);
		CHECK_STR(arg, domain, a.domain);
		CHECK_TRUE(arg, rest && *rest == '\0');
	}
}

static void test_parse_path(void)
{
	char arg[600], local[400];

	memset(local, 0, sizeof(local));
	snprintf(local, sizeof(local), "team-bounces+%s=example.net",
		 "a-very-long-member-local-part-that-passes-sixty-four-octets");
	snprintf(arg, sizeof(arg), "<%s@Example.ORG>", local);
	path(arg, ADDRESS_OK, local, "example.org");
	path("<someone-else-with-a-long-local-part-that-is-not-a-list-address-at-all@x.org>",
	     ADDRESS_TOOLONG, NULL, NULL);
	path("<\"team-bounces+quoted\"@x.org>", ADDRESS_TOOLONG, NULL, NULL);
	path("<team-bounces+a..b=c.d@x.org>", ADDRESS_TOOLONG, NULL, NULL);
	path("<team-bounces+a=b.c@x.org", ADDRESS_SYNTAX, NULL, NULL);
	path("<team-bounces+a=b.c@x@y.org>", ADDRESS_SYNTAX, NULL, NULL);
	path("<team-bounces+a=b.c@bad_domain>", ADDRESS_SYNTAX, NULL, NULL);
	path("<team-bounces+a=b.c>", ADDRESS_SYNTAX, NULL, NULL);
	path("team-bounces+a=b.c@x.org", ADDRESS_TOOLONG, NULL, NULL);
	path("<team-confirm+abcdefghijklmnopqrstuvwxyz@x.org>", ADDRESS_OK,
	     "team-confirm+abcdefghijklmnopqrstuvwxyz", "x.org");
	{
		struct address a;
		const char *rest;
		CHECK_INT("utf8 without SMTPUTF8", ADDRESS_NEED_UTF8,
			  list_parse_path("<team-bounces+j\xc3\xb6rg=example.net@x.org>", 0, &a, &rest));
		CHECK_INT("utf8", ADDRESS_OK,
			  list_parse_path("<team-bounces+j\xc3\xb6rg=example.net@x.org>", 1, &a, &rest));
		CHECK_INT("utf8 flag", 1, a.non_ascii);
		CHECK_INT("bad utf8", ADDRESS_SYNTAX,
			  list_parse_path("<team-bounces+j\xc3=example.net@x.org>", 1, &a, &rest));
	}
	{
		/* over 256 octets in all */
		char big[700];
		memset(local, 'b', 300);
		local[300] = '\0';
		snprintf(big, sizeof(big), "<team-bounces+%s=x.y@x.org>", local);
		path(big, ADDRESS_TOOLONG, NULL, NULL);
	}
}

/* ---- with a database ------------------------------------------------------ */

static void lookup(const char *addr, int want, const char *list, enum list_role role, const char *arg)
{
	struct address a;
	struct list_info l;
	enum list_role r = LIST_ROLE_POST;
	char got_arg[ADDRESS_PATH_MAX + 1] = "";
	int got;

	REQUIRE(address_parse_plain(addr, 1, &a) == ADDRESS_OK);
	got = list_lookup(&a, &l, &r, got_arg, sizeof(got_arg));
	CHECK_INT(addr, want, got);
	if (want == 1 && got == 1) {
		CHECK_STR(addr, list, l.address);
		CHECK_INT(addr, role, r);
		CHECK_STR(addr, arg, got_arg);
	}
}

static void test_database(void)
{
	const char *dir = testdir_make("list");
	const char *db = testdb_make(dir);
	char tok[LIST_TOKEN_CHARS + 1], tok2[LIST_TOKEN_CHARS + 1];
	struct list_pending p;
	struct list_info l;
	long long now = time(NULL);
	int disabled = 0;

	testdb_exec(db, "INSERT INTO domains VALUES ('example.org');"
		    "INSERT INTO settings VALUES ('spool_dir', '/nonexistent');"
		    "INSERT INTO lists (address, owner) VALUES ('team@example.org', 'boss@example.net');"
		    "INSERT INTO lists (address, owner, posting, subject_prefix) VALUES "
		    "  ('x-owner@example.org', 'boss@example.net', 'announce', '[x]');"
		    "INSERT INTO list_members (list, address) VALUES ('team@example.org', 'alice@example.net'),"
		    "  ('team@example.org', 'bob@example.org');"
		    "INSERT INTO list_members (list, address, enabled) VALUES "
		    "  ('team@example.org', 'carol@example.net', 0);");
	REQUIRE(db_open() == DB_OK);

	lookup("team@example.org", 1, "team@example.org", LIST_ROLE_POST, "");
	lookup("TEAM@example.org", 1, "team@example.org", LIST_ROLE_POST, "");
	lookup("team-subscribe@example.org", 1, "team@example.org", LIST_ROLE_SUBSCRIBE, "");
	lookup("team-owner@example.org", 1, "team@example.org", LIST_ROLE_OWNER, "");
	lookup("team-bounces+alice=example.net@example.org", 1, "team@example.org", LIST_ROLE_BOUNCES,
	       "alice=example.net");
	lookup("team-confirm+abcdefghijklmnopqrstuvwxyz@example.org", 1, "team@example.org",
	       LIST_ROLE_CONFIRM, "abcdefghijklmnopqrstuvwxyz");
	lookup("team-confirm+nope@example.org", 0, NULL, 0, NULL);
	lookup("team-other@example.org", 0, NULL, 0, NULL);
	lookup("team@example.net", 0, NULL, 0, NULL);
	/* a list named like a role: the exact address wins */
	lookup("x-owner@example.org", 1, "x-owner@example.org", LIST_ROLE_POST, "");
	lookup("x-owner-owner@example.org", 1, "x-owner@example.org", LIST_ROLE_OWNER, "");
	lookup("x@example.org", 0, NULL, 0, NULL);

	CHECK_INT("load", 1, list_load("x-owner@example.org", &l));
	CHECK_INT("posting", LIST_POSTING_ANNOUNCE, l.posting);
	CHECK_STR("prefix", "[x]", l.subject_prefix);
	CHECK_STR("local", "x-owner", l.local);
	CHECK_INT("load none", 0, list_load("nope@example.org", &l));

	CHECK_INT("member", 1, list_is_member("team@example.org", "alice@example.net"));
	CHECK_INT("member case", 1, list_is_member("team@example.org", "Alice@Example.NET"));
	CHECK_INT("disabled is a member", 1, list_is_member("team@example.org", "carol@example.net"));
	CHECK_INT("not a member", 0, list_is_member("team@example.org", "eve@example.net"));
	CHECK_INT("count", 2, list_member_count("team@example.org"));

	/* confirmations: single use, bound to their list, expiring */
	REQUIRE(list_token_new(tok) == 0);
	REQUIRE(db_begin() == 0);
	CHECK_INT("add", 1, list_pending_add("team@example.org", "eve@example.net", "subscribe", tok, NULL,
					     now, LIST_CONFIRM_SECONDS));
	REQUIRE(db_commit() == 0);
	CHECK_INT("find", 1, list_pending_find("team@example.org", tok, now, &p));
	CHECK_STR("find address", "eve@example.net", p.address);
	CHECK_STR("find action", "subscribe", p.action);
	CHECK_INT("another list's", 0, list_pending_find("x-owner@example.org", tok, now, &p));
	CHECK_INT("expired", 0, list_pending_find("team@example.org", tok, now + LIST_CONFIRM_SECONDS, &p));
	for (int i = 0; i < LIST_TOKEN_CHARS; i++)
		tok2[i] = (char)(tok[i] >= 'a' ? tok[i] - 'a' + 'A' : tok[i]);
	tok2[LIST_TOKEN_CHARS] = '\0';
	CHECK_INT("upper case", 1, list_pending_find("team@example.org", tok2, now, &p));
	REQUIRE(db_begin() == 0);
	CHECK_INT("take", 1, list_pending_take("team@example.org", tok, now, &p));
	CHECK_INT("take again", 0, list_pending_take("team@example.org", tok, now, &p));
	CHECK_INT("join", 0, list_member_set("team@example.org", p.address, 1));
	REQUIRE(db_commit() == 0);
	CHECK_INT("joined", 1, list_is_member("team@example.org", "eve@example.net"));
	CHECK_INT("gone", 0, list_pending_find("team@example.org", tok, now, &p));

	/* limits: per address and action, then per list */
	REQUIRE(db_begin() == 0);
	for (int i = 0; i < LIST_PENDING_PER_ADDRESS_MAX; i++) {
		REQUIRE(list_token_new(tok) == 0);
		CHECK_INT("within the limit", 1, list_pending_add("team@example.org", "dan@example.net",
								  "subscribe", tok, NULL, now, 60));
	}
	REQUIRE(list_token_new(tok) == 0);
	CHECK_INT("past the limit", 0, list_pending_add("team@example.org", "dan@example.net", "subscribe",
							tok, NULL, now, 60));
	CHECK_INT("another action", 1, list_pending_add("team@example.org", "dan@example.net", "help",
							 NULL, NULL, now, 60));
	CHECK_INT("expired ones do not count", 1,
		  list_pending_add("team@example.org", "dan@example.net", "subscribe", tok, NULL,
				   now + 61, 60));
	REQUIRE(db_commit() == 0);

	/* bounces: each counts, within the window; the limit disables */
	CHECK_INT("bounce", 1, list_bounce("team@example.org", "alice@example.net", now, 3, &disabled));
	CHECK_INT("not a member", 0, list_bounce("team@example.org", "eve@example.com", now, 3, &disabled));
	CHECK_INT("disabled member", 0,
		  list_bounce("team@example.org", "carol@example.net", now, 3, &disabled));
	CHECK_INT("the same day", 1, list_bounce("team@example.org", "alice@example.net", now, 3, &disabled));
	CHECK_INT("not yet", 0, disabled);
	/* thirty days on, the first two are outside the window */
	CHECK_INT("day 31", 1, list_bounce("team@example.org", "alice@example.net", now + 31 * 86400, 3,
					   &disabled));
	CHECK_INT("window", 0, disabled);
	CHECK_INT("day 31 again", 1, list_bounce("team@example.org", "alice@example.net",
						 now + 31 * 86400 + 60, 3, &disabled));
	CHECK_INT("day 32", 1, list_bounce("team@example.org", "alice@example.net", now + 32 * 86400, 3,
					   &disabled));
	CHECK_INT("disabled", 1, disabled);
	CHECK_INT("no longer counted", 0,
		  list_bounce("team@example.org", "alice@example.net", now + 32 * 86400, 3, &disabled));
	CHECK_INT("enabled left", 2, list_member_count("team@example.org"));
	/* without a limit: never disabled, at most LIST_BOUNCES_KEPT rows */
	for (int i = 0; i < LIST_BOUNCES_KEPT + 5; i++)
		REQUIRE(list_bounce("team@example.org", "bob@example.org", now, 0, &disabled) == 1 &&
			!disabled);
	{
		sqlite3_stmt *st;
		REQUIRE(sqlite3_prepare_v2(db_handle(), "SELECT count(*) FROM list_bounces WHERE "
					   "address = 'bob@example.org'", -1, &st, NULL) == SQLITE_OK);
		REQUIRE(sqlite3_step(st) == SQLITE_ROW);
		CHECK_INT("kept", LIST_BOUNCES_KEPT, sqlite3_column_int(st, 0));
		sqlite3_finalize(st);
	}
}

int main(void)
{
	test_split();
	test_verp();
	test_tokens();
	test_commands();
	test_dsn();
	test_list_id();
	test_parse_path();
	test_database();
	return check_finish("list");
}
