/* A message edited on its way: fields added on top and fields taken out,
 * copied into a staging file (a DKIM signature on top, a spam verdict
 * that replaces a forged one, a list's own fields). */
#ifndef POSTAGE_EDIT_H
#define POSTAGE_EDIT_H

#include <stddef.h>
#include <sys/types.h>

#include "headers.h"

/* Copies the message in src (size bytes) to a new staging file
 * spool_dir/tmp/<name>, or with in_memory, while it fits in
 * STAGING_MEMORY_MAX, to a memfd (path "": spool_staging_begin): prefix
 * first, then src without the fields listed in drop (each given by offset
 * and raw_len). Not fsynced (a staging file: queue_enqueue and
 * maildir_deliver sync what they keep). Returns its fd (read-write, at
 * offset 0) with the path in path and its size in *out_size, or -1 with
 * errno and nothing left behind. */
int header_copy_edited(int src, off_t size, const char *prefix, size_t prefix_len,
		       const struct header_field *const *drop, size_t ndrop, const char *name,
		       int in_memory, char *path, size_t cap, off_t *out_size);

#endif
