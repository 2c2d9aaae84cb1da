/*
 * hil_storm - exec storm generator for the agent stress suite and `hil bench agent`.
 *
 *   hil_storm COUNT TARGET [RATE_PER_S]
 *   hil_storm            (no arguments: exit 0 at once; a static, fast-to-exec storm target)
 *
 * fork()s and execv()s TARGET COUNT times, one child at a time (each child is waited for, so
 * the start order is the fork order), optionally paced at RATE_PER_S starts per second.
 * stdout: one line per child, "<index> <pid>", in start order.
 * stderr: "execs=<n> failed=<n> seconds=<s> rate=<execs/s>".
 * Built on the host (hil.deploy.reference.build_storm_tool, dynamically linked: 15 KB to copy; the
 * guest shares the host's Debian release) and copied into the guest. The fast target is
 * hil_noop.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	long count, i, failed = 0;
	double rate = 0, t0, t;
	static char out[1 << 16];

	if (argc == 1)
		return 0;
	if (argc < 3) {
		fprintf(stderr, "usage: %s COUNT TARGET [RATE_PER_S]\n", argv[0]);
		return 2;
	}
	count = strtol(argv[1], NULL, 10);
	if (argc > 3)
		rate = strtod(argv[3], NULL);
	setvbuf(stdout, out, _IOFBF, sizeof(out));
	t0 = now();
	for (i = 0; i < count; i++) {
		pid_t pid;
		int status;

		if (rate > 0) {
			double due = t0 + i / rate, wait_s = due - now();

			if (wait_s > 0) {
				struct timespec d = { (time_t)wait_s, (long)((wait_s - (time_t)wait_s) * 1e9) };

				nanosleep(&d, NULL);
			}
		}
		pid = fork();
		if (pid < 0) {
			failed++;
			continue;
		}
		if (pid == 0) {
			char *args[] = { argv[2], NULL };

			execv(argv[2], args);
			_exit(127);
		}
		printf("%ld %d\n", i, (int)pid);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(status) || WEXITSTATUS(status) == 127)
			failed++;
	}
	fflush(stdout);
	t = now() - t0;
	fprintf(stderr, "execs=%ld failed=%ld seconds=%.3f rate=%.1f\n", count, failed, t, t > 0 ? count / t : 0.0);
	return failed ? 1 : 0;
}
