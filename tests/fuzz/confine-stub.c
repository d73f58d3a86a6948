/* For fuzz-pop3-session: the one process runs every input's session in
 * the same world (database, Maildirs), so a login must not close the
 * database or confine the process, as pop3-handler/confine.c does. */
#include "../../pop3-handler/confine.h"

enum confine_result confine_after_login(const char *maildir)
{
	(void)maildir;
	return CONFINE_UNSUPPORTED;
}
