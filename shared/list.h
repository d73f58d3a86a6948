/* Mailing lists (README "Mailing lists"): the addresses a list has
 * without rows of its own, VERP, confirmation tokens, the Subject
 * commands of <list>-request@, what a bounce report says, and the
 * database side (lookup, members, confirmations, bounce counts, expiry).
 * The work on a post's copies is smtp-handler/lists.c's; the notices a
 * list sends are listmail.c's.
 *
 * For a list team@example.org:
 *   team@                          the posting address
 *   team-subscribe@, team-unsubscribe@   joining and leaving (confirmed)
 *   team-request@                  Subject: subscribe, unsubscribe, help
 *   team-owner@                    to the list's owner
 *   team-bounces+alice=example.net@  the envelope sender of alice's copies
 *   team-confirm+<token>@          confirmations */
#ifndef POSTAGE_LIST_H
#define POSTAGE_LIST_H

#include <stddef.h>

#include "address.h"
#include "limits.h"

enum list_role {
	LIST_ROLE_POST = 0,
	LIST_ROLE_SUBSCRIBE,
	LIST_ROLE_UNSUBSCRIBE,
	LIST_ROLE_REQUEST,
	LIST_ROLE_OWNER,
	LIST_ROLE_BOUNCES,  /* arg: the member as encoded ("alice=example.net"), or "" */
	LIST_ROLE_CONFIRM,  /* arg: the token */
};

enum list_posting {
	LIST_POSTING_MEMBERS = 0,
	LIST_POSTING_ANYONE,
	LIST_POSTING_MODERATED,
	LIST_POSTING_ANNOUNCE,
};

struct list_info {
	char address[ADDRESS_PATH_MAX + 1];  /* team@example.org, as the row has it */
	char local[ADDRESS_LOCAL_MAX + 1];   /* team */
	char domain[ADDRESS_DOMAIN_MAX + 1]; /* example.org, lower case */
	char owner[ADDRESS_PATH_MAX + 1];
	enum list_posting posting;
	char archive[ADDRESS_LOCAL_MAX + 1]; /* a mailbox login, "" for none */
	char subject_prefix[LIST_PREFIX_MAX + 1];
};

/* ---- parsers (no database) ------------------------------------------ */

/* Splits a local part into a list's local part (base) and the role its
 * suffix names: "team-subscribe" is team's SUBSCRIBE; "team-bounces+x" is
 * BOUNCES with arg "x" (everything after the first '+'); "team-bounces"
 * BOUNCES with arg ""; "team-confirm+TOKEN" CONFIRM with arg "TOKEN" (a
 * well-formed token, else no role). Suffixes compare case-insensitively.
 * Returns 1 when a role suffix was found; 0 when not (base is the local
 * part, role LIST_ROLE_POST); -1 when it does not fit base or arg. */
int list_split_local(const char *local, char *base, size_t cap, enum list_role *role, char *arg,
		     size_t argcap);

/* The VERP envelope sender of a member's copy:
 * "<bounces local>+<member local>=<member domain>@<bounces domain>" for
 * bounces "team-bounces@example.org". 0, or -1 when it cannot be made (a
 * quoted member, or longer than ADDRESS_PATH_MAX). */
int list_verp_address(const char *bounces, const char *member, char *out, size_t cap);

/* The member a VERP arg names ("alice=example.net", the last '=' for
 * '@'), checked as an address, into out. 0, or -1. */
int list_verp_member(const char *arg, char *out, size_t cap);

/* The list a bounces address belongs to: "team-bounces@example.org" (or
 * with "+member") gives "team@example.org". 0, or -1 when it is not one. */
int list_of_bounces(const char *bounces, char *out, size_t cap);

/* A new token: LIST_TOKEN_CHARS characters of base32 (a-z, 2-7) from
 * getrandom(), 130 bits. 0, or -1 when the kernel gives no randomness. */
int list_token_new(char out[LIST_TOKEN_CHARS + 1]);

/* Is s a well-formed token (either case)? */
int list_token_syntax(const char *s);

/* The hex SHA-256 of the token (lower-cased first): what is stored, so a
 * copy of the database confirms nothing. 0, or -1 (no GnuTLS). */
int list_token_hash(const char *token, char hex[65]);

enum list_command {
	LIST_CMD_NONE = 0,
	LIST_CMD_SUBSCRIBE,   /* "subscribe" or "join" */
	LIST_CMD_UNSUBSCRIBE, /* "unsubscribe" or "leave" */
	LIST_CMD_HELP,        /* "help" */
	LIST_CMD_CONFIRM,     /* "confirm <token>" anywhere: a reply to a confirmation */
};

/* The command of a -request@ message's Subject (unfolded, len bytes):
 * the first word after any "Re:", "Fwd:" and the like, case-insensitive;
 * or "confirm <token>" anywhere in it (token into token, cap at least
 * LIST_TOKEN_CHARS + 1). */
enum list_command list_subject_command(const char *subject, size_t len, char *token, size_t cap);

/* What a delivery status report (RFC 3464) says, from the text of its
 * body (len bytes, LF or CRLF lines): fields are read wherever they stand,
 * so it is a scan, not a MIME parse. failed: "Action: failed" fields.
 * rcpts: the Final-Recipient (rfc822) of each failed recipient, at most
 * LIST_DSN_RECIPIENTS_MAX. */
struct list_dsn {
	size_t actions;  /* Action fields seen */
	size_t failed;
	size_t nrcpts;
	char rcpts[LIST_DSN_RECIPIENTS_MAX][ADDRESS_PATH_MAX + 1];
};
void list_dsn_scan(const char *body, size_t len, struct list_dsn *out);

/* "team.example.org" for team@example.org (RFC 2919's list-id). 0, or -1. */
int list_id(const struct list_info *l, char *out, size_t cap);

/* Does a List-Id field value (len bytes) name id (case-insensitive)? */
int list_id_matches(const char *value, size_t len, const char *id);

/* Parses a path "<...>" whose local part is longer than the 64 octets
 * address_parse_path accepts, when it is a list's VERP or confirmation
 * address (holds "-bounces+" or "-confirm+"): members with long
 * addresses make long VERP addresses (RFC 5321 4.5.3.1 asks servers to
 * accept what they can). Same contract as address_parse_path;
 * ADDRESS_TOOLONG when it is not such an address. */
enum address_parse list_parse_path(const char *arg, int allow_utf8, struct address *out,
				   const char **rest);

const char *list_role_name(enum list_role r);
const char *list_posting_name(enum list_posting p);

/* ---- the database --------------------------------------------------- */

/* The list an address of a hosted domain belongs to, and its role: one
 * query for the address itself and for its base (list_split_local); an
 * exact match is the posting address. 1 found, 0 not, -1 trouble. */
int list_lookup(const struct address *a, struct list_info *out, enum list_role *role, char *arg,
		size_t argcap);

/* The list whose posting address is address. 1, 0, -1. */
int list_load(const char *address, struct list_info *out);

/* Is address a member of list (enabled or not)? 1, 0, -1. */
int list_is_member(const char *list, const char *address);

/* Is address a member of list, and does it get the posts? 2 a member
 * (enabled), 1 a member that gets nothing (disabled), 0 none, -1 trouble. */
int list_member_state(const char *list, const char *address);

/* Enabled members of list; -1 on trouble. */
long list_member_count(const char *list);

/* One bounce for member; when its bounces within LIST_BOUNCE_WINDOW_DAYS
 * reach limit (0: never), the member is disabled (enabled = 0, its
 * bounces forgotten) and *disabled set. 1 counted, 0 not (not a member,
 * or one disabled already), -1 trouble. */
int list_bounce(const char *list, const char *member, long long now, long long limit,
		int *disabled);

struct list_pending {
	char list[ADDRESS_PATH_MAX + 1];
	char address[ADDRESS_PATH_MAX + 1];
	char action[16];                /* subscribe, unsubscribe, post */
	char held[64];                  /* post: the file in spool_dir/held/ */
	long long expires_at;
};

/* A waiting confirmation of list by token, not expired at now. 1 found,
 * 0 not, -1 trouble. */
int list_pending_find(const char *list, const char *token, long long now, struct list_pending *out);

/* Inside the caller's transaction: removes it (single use). 1 taken, 0
 * gone (used or expired meanwhile), -1 trouble. */
int list_pending_take(const char *list, const char *token, long long now, struct list_pending *out);

/* Inside the caller's transaction: stores a confirmation (token may be
 * NULL for "help": a reply counted, nothing to confirm), unless
 * LIST_PENDING_PER_ADDRESS_MAX of the same address and action (not for
 * posts) or LIST_PENDING_PER_LIST_MAX of the list are waiting. 1 stored,
 * 0 refused by those limits (logged), -1 trouble. */
int list_pending_add(const char *list, const char *address, const char *action,
		     const char *token, const char *held, long long now, long long ttl);

/* Inside the caller's transaction: the membership a confirmation gives.
 * join: the member is added (or enabled again, its bounces forgotten);
 * else removed. 0, or -1. */
int list_member_set(const char *list, const char *address, int join);

/* Queue runner: confirmations and held posts past their time go (the
 * held files in spool_dir/held/ with them), bounces older than the window
 * and held files nobody knows of. */
void list_expire(long long now);

/* spool_dir/held/<name> into path; makes the folder when make is set.
 * 0, or -1 with errno. */
int list_held_path(const char *name, char *path, size_t cap, int make);

#endif
