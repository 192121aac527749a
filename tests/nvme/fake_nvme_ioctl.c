/*
 * LD_PRELOAD shim that lets the real nvme-cli run against canned NVMe data, so tests can
 * compare flashcache.nvme's encoders and nvme-cli-shaped output with nvme-cli itself.
 *
 * It replaces ioctl(): NVME_IOCTL_ID returns 1; a passthrough command (72-byte struct,
 * ADMIN_CMD 0x41 or IO_CMD 0x43) is logged to stderr as "CMD <req> <hex of the struct
 * with addr zeroed>"; data-out commands (opcode bit 0) also log "DATA <hex>"; data-in
 * commands get their buffer filled from $FAKE_NVME_DIR/log-<lid>.bin (Get Log Page),
 * id-<cns>.bin (Identify) or io-<opcode>.bin / admin-<opcode>.bin, zero-padded.
 * Any other ioctl goes to the real one. Test-only; never built into flashcache.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct passthru {
	uint8_t opcode, flags;
	uint16_t rsvd1;
	uint32_t nsid, cdw2, cdw3;
	uint64_t metadata, addr;
	uint32_t metadata_len, data_len, cdw10, cdw11, cdw12, cdw13, cdw14, cdw15, timeout_ms, result;
};

int ioctl(int fd, unsigned long req, ...)
{
	static int (*real)(int, unsigned long, ...);
	va_list ap;
	void *arg;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (!real)
		real = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
	if (((req >> 8) & 0xff) != 'N')
		return real(fd, req, arg);
	if ((req & 0xff) == 0x40)
		return 1;

	struct passthru *c = arg;
	unsigned nr = req & 0xff;
	int admin = nr == 0x41;
	uint8_t *data = (uint8_t *)(uintptr_t)c->addr;
	uint64_t addr = c->addr;
	char path[512];
	const char *dir = getenv("FAKE_NVME_DIR");

	if (nr != 0x41 && nr != 0x43)
		return -1;
	c->addr = 0;
	fprintf(stderr, "CMD %#lx ", req);
	for (int i = 0; i < 72; i++)
		fprintf(stderr, "%02x", ((uint8_t *)c)[i]);
	fprintf(stderr, "\n");
	c->addr = addr;

	if (c->opcode & 1) {
		fprintf(stderr, "DATA ");
		for (unsigned i = 0; i < c->data_len; i++)
			fprintf(stderr, "%02x", data[i]);
		fprintf(stderr, "\n");
		return 0;
	}
	if (admin && c->opcode == 0x02)
		snprintf(path, sizeof(path), "%s/log-%02x.bin", dir, c->cdw10 & 0xff);
	else if (admin && c->opcode == 0x06)
		snprintf(path, sizeof(path), "%s/id-%02x.bin", dir, c->cdw10 & 0xff);
	else
		snprintf(path, sizeof(path), "%s/%s-%02x.bin", dir, admin ? "admin" : "io", c->opcode);
	memset(data, 0, c->data_len);
	FILE *f = fopen(path, "rb");
	if (f) {
		size_t got = fread(data, 1, c->data_len, f);
		(void)got;
		fclose(f);
	}
	return 0;
}
