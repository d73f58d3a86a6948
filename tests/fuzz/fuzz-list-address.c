/* A mailing list's addresses, as a client names them at RCPT: the role
 * suffixes (list_split_local), VERP both ways, tokens, and the long VERP
 * paths list_parse_path takes. The first byte picks allow_utf8; the rest
 * is the text. Checked: base and arg fit their buffers and come from the
 * input; a role's base is a non-empty prefix; a CONFIRM arg is a token; a
 * member decoded from VERP is an address that encodes back to the same
 * VERP argument; what list_parse_path accepts stays within the RFC 5321
 * sizes and holds a list's VERP or confirmation suffix. */
#include "fuzz.h"

#include <ctype.h>
#include <strings.h>

#include "address.h"
#include "list.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char text[1024], base[ADDRESS_PATH_MAX + 1], arg[ADDRESS_PATH_MAX + 1];
	char member[ADDRESS_PATH_MAX + 1], verp[ADDRESS_PATH_MAX + 1], again[ADDRESS_PATH_MAX + 1];
	enum list_role role;
	struct address a;
	const char *rest = NULL;
	int allow_utf8, split;

	if (size < 1 || size >= sizeof(text))
		return 0;
	allow_utf8 = data[0] & 1;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';

	split = list_split_local(text, base, sizeof(base), &role, arg, sizeof(arg));
	FUZZ_ASSERT(split >= -1 && split <= 1);
	if (split == 0) {
		FUZZ_ASSERT(role == LIST_ROLE_POST && strcmp(base, text) == 0 && !arg[0]);
	} else if (split == 1) {
		size_t bl = strlen(base);
		FUZZ_ASSERT(bl > 0 && strncmp(base, text, bl) == 0);
		FUZZ_ASSERT(text[bl] == '-');
		if (role == LIST_ROLE_CONFIRM)
			FUZZ_ASSERT(list_token_syntax(arg));
		if (arg[0])
			FUZZ_ASSERT(strstr(text, arg) != NULL && !strchr(base, '+'));
	}

	if (list_verp_member(text, member, sizeof(member)) == 0) {
		FUZZ_ASSERT(address_parse_plain(member, 1, &a) == ADDRESS_OK);
		/* encodes back: the same local part, the domain lower-cased */
		if (list_verp_address("team-bounces@example.org", member, verp, sizeof(verp)) == 0) {
			const char *plus = strchr(verp, '+'), *at = strrchr(verp, '@');
			FUZZ_ASSERT(plus && at && plus < at);
			snprintf(again, sizeof(again), "%.*s", (int)(at - plus - 1), plus + 1);
			FUZZ_ASSERT(strcasecmp(again, text) == 0);
			FUZZ_ASSERT(list_of_bounces(verp, again, sizeof(again)) == 0);
			FUZZ_ASSERT(strcmp(again, "team@example.org") == 0);
		}
	}
	if (list_token_syntax(text))
		FUZZ_ASSERT(strlen(text) == LIST_TOKEN_CHARS);

	if (list_parse_path(text, allow_utf8, &a, &rest) == ADDRESS_OK) {
		FUZZ_ASSERT(rest && rest > text && rest <= text + strlen(text));
		FUZZ_ASSERT(a.local[0] && a.domain[0]);
		FUZZ_ASSERT(strlen(a.local) + 1 + strlen(a.domain) <= ADDRESS_PATH_MAX);
		FUZZ_ASSERT(address_domain_valid(a.domain, strlen(a.domain), allow_utf8));
		FUZZ_ASSERT(strcasestr(a.local, "-bounces+") || strcasestr(a.local, "-confirm+"));
		FUZZ_ASSERT(allow_utf8 || !a.non_ascii);
		for (const char *c = a.domain; *c; c++)
			FUZZ_ASSERT(!isupper((unsigned char)*c));
	}
	return 0;
}
