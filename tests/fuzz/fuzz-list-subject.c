/* The Subject of a message to a list's -request@ address: the commands
 * subscribe, unsubscribe, help and "confirm <token>". Checked: the answer
 * is one of the commands; a confirmation's token is well-formed and is in
 * the subject; anything else leaves no token; a Subject that is one
 * command word alone is that command. */
#include "fuzz.h"

#include <strings.h>

#include "list.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char token[LIST_TOKEN_CHARS + 1];
	enum list_command c;

	if (size > 4096)
		return 0;
	c = list_subject_command((const char *)data, size, token, sizeof(token));
	FUZZ_ASSERT(c >= LIST_CMD_NONE && c <= LIST_CMD_CONFIRM);
	if (c == LIST_CMD_CONFIRM) {
		FUZZ_ASSERT(list_token_syntax(token));
		FUZZ_ASSERT(memmem(data, size, token, LIST_TOKEN_CHARS) != NULL);
	} else {
		FUZZ_ASSERT(token[0] == '\0');
	}
	if (size == 4 && strncasecmp((const char *)data, "help", 4) == 0)
		FUZZ_ASSERT(c == LIST_CMD_HELP);
	return 0;
}
