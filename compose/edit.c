#include "edit.h"

#include <errno.h>
#include <unistd.h>

#include "limits.h"
#include "maildir.h"
#include "spool.h"

int header_copy_edited(int src, off_t size, const char *prefix, size_t prefix_len,
		       const struct header_field *const *drop, size_t ndrop, const char *name,
		       int in_memory, char *path, size_t cap, off_t *out_size)
{
	off_t at = 0;
	int fd, e;

	if (in_memory && size + (off_t)prefix_len <= STAGING_MEMORY_MAX)
		fd = spool_staging_begin(name, path, cap);
	else
		fd = spool_staging_open(name, path, cap);
	if (fd < 0)
		return -1;
	if (fd_write_all(fd, prefix, prefix_len) < 0)
		goto fail;
	/* drop is in file order (fields come from one header block). */
	for (size_t i = 0; i < ndrop; i++) {
		if (drop[i]->offset < at)
			continue;
		if (fd_copy_range(fd, src, at, drop[i]->offset) < 0)
			goto fail;
		at = drop[i]->offset + (off_t)drop[i]->raw_len;
	}
	/* No fsync here: it is a staging file like the one it replaces;
	 * whoever makes it durable (maildir_deliver's copy, queue_enqueue)
	 * syncs it then. */
	if (fd_copy_range(fd, src, at, size) < 0)
		goto fail;
	*out_size = lseek(fd, 0, SEEK_END);
	if (*out_size < 0 || lseek(fd, 0, SEEK_SET) < 0)
		goto fail;
	return fd;
fail:
	e = errno;
	close(fd);
	if (path[0])
		unlink(path);
	errno = e;
	return -1;
}
