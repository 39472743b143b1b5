/* mono: the monotonic clock every room times things with (timeouts, back-offs,
 * request durations); wall-clock jumps must not fire or stall them. */
#ifndef MGW_MONO_H
#define MGW_MONO_H

#include <stdint.h>
#include <time.h>

static inline uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static inline uint64_t mono_ms(void)
{
	return mono_us() / 1000u;
}

#endif
