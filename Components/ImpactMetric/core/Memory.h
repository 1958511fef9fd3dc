// Memory the engine may use, and the up-front estimates that keep a level from being killed by
// the kernel's OOM killer half way: a level that would not fit stops before it starts, with the
// estimate and the parameter to change.
#pragma once

#include <cstdint>
#include <string>

namespace impact
{

/** Bytes a level may use: `limitGB` when positive (MemoryLimit), else what the machine has
 *  available now (MemAvailable of /proc/meminfo, else the physical memory). */
int64_t
memoryLimit(double limitGB);

/** "3.2 GB" style text. */
std::string
bytesText(double bytes);

} // namespace impact
