/* data_feed on any bytes, cut into chunks the way io_read_chunk cuts them
 * (at each LF, or at a cap) with caps drawn from the first two input
 * bytes, and wire_encode in random pieces. Checked beyond "no crash":
 *   - the chunking never changes the verdict: where the data ends, whether
 *     it was bare, and (when it was not) the stored bytes and counts;
 *   - a message that is not refused obeys wire_bytes = stored + LFs;
 *   - wire_encode of what was stored, fed back, gives the same bytes. */
#include "fuzz.h"

#include "limits.h"
#include "message.h"

struct run {
	struct data_reader r;
	size_t consumed, outlen;
	char *out;
};

/* xorshift: a cheap, deterministic stream of chunk caps */
static unsigned next_rand(unsigned *state)
{
	unsigned x = *state ? *state : 0x9e3779b9u;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*state = x;
	return x;
}

/* Feeds wire in io_read_chunk-shaped chunks. cap 0: random caps from 3
 * (the least that holds ".\r\n" whole) to 67, else always cap. */
static void feed(const char *wire, size_t len, size_t cap, unsigned seed, struct run *run)
{
	size_t off = 0;

	data_reader_init(&run->r);
	run->outlen = 0;
	while (off < len && !run->r.ended) {
		size_t c = cap ? cap : 3 + next_rand(&seed) % 65;
		const char *lf = memchr(wire + off, '\n', len - off);
		size_t take = lf ? (size_t)(lf - (wire + off)) + 1 : len - off;
		size_t n;

		if (take > c)
			take = c;
		n = data_feed(&run->r, wire + off, take, run->out + run->outlen);
		FUZZ_ASSERT(n <= take);
		run->outlen += n;
		off += take;
	}
	run->consumed = off;
	FUZZ_ASSERT(run->outlen <= run->consumed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run ref, cut, back;
	const char *wire;
	size_t len;
	unsigned seed;

	if (size < 2 || size > 65536)
		return 0;
	seed = (unsigned)data[0] << 8 | data[1];
	wire = (const char *)data + 2;
	len = size - 2;

	ref.out = malloc(len + 1);
	cut.out = malloc(len + 1);
	if (!ref.out || !cut.out)
		abort();
	feed(wire, len, SMTP_DATA_CHUNK_MAX, 0, &ref);
	feed(wire, len, 0, seed | 1, &cut);

	FUZZ_ASSERT(ref.r.ended == cut.r.ended);
	FUZZ_ASSERT(ref.r.bare == cut.r.bare);
	FUZZ_ASSERT(ref.consumed == cut.consumed);
	FUZZ_ASSERT(ref.r.has_nul == cut.r.has_nul);
	FUZZ_ASSERT(ref.r.eight_bit == cut.r.eight_bit);
	FUZZ_ASSERT(ref.r.wire_bytes == cut.r.wire_bytes);
	if (!ref.r.bare) {
		FUZZ_ASSERT(ref.outlen == cut.outlen);
		FUZZ_ASSERT(memcmp(ref.out, cut.out, ref.outlen) == 0);
		FUZZ_ASSERT(ref.r.lf_count == cut.r.lf_count);
	}
	if (ref.r.ended) {
		/* the terminator is the last thing read */
		FUZZ_ASSERT(ref.consumed >= 3 && memcmp(wire + ref.consumed - 3, ".\r\n", 3) == 0);
		FUZZ_ASSERT(ref.consumed == 3 || wire[ref.consumed - 4] == '\n');
	}

	if (ref.r.ended && !ref.r.bare) {
		char *enc = malloc(2 * ref.outlen + 3);
		size_t n = 0, off = 0;
		int at = 1;
		unsigned s2 = seed | 2;

		if (!enc)
			abort();
		FUZZ_ASSERT(ref.r.wire_bytes == ref.outlen + ref.r.lf_count);
		/* what was stored goes back on the wire (as POP3 RETR and the
		 * queue's client send it), in random pieces */
		while (off < ref.outlen) {
			size_t piece = 1 + next_rand(&s2) % 64;

			if (piece > ref.outlen - off)
				piece = ref.outlen - off;
			n += wire_encode(&at, ref.out + off, piece, enc + n);
			off += piece;
		}
		FUZZ_ASSERT(n <= 2 * ref.outlen);
		if (at != 1) {
			/* a last line without LF gets one, as the senders do */
			n += wire_encode(&at, "\n", 1, enc + n);
		}
		memcpy(enc + n, ".\r\n", 3);
		back.out = malloc(n + 3 + 1);
		if (!back.out)
			abort();
		feed(enc, n + 3, SMTP_DATA_CHUNK_MAX, 0, &back);
		FUZZ_ASSERT(back.r.ended && !back.r.bare && back.consumed == n + 3);
		FUZZ_ASSERT(back.outlen >= ref.outlen && memcmp(back.out, ref.out, ref.outlen) == 0);
		FUZZ_ASSERT(back.outlen - ref.outlen <= 1);
		free(back.out);
		free(enc);
	}
	free(ref.out);
	free(cut.out);
	return 0;
}
