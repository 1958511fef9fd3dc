#include "Memory.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace impact
{

int64_t
memoryLimit(double limitGB)
{
  if (limitGB > 0)
  {
    return static_cast<int64_t>(limitGB * 1e9);
  }
  std::ifstream meminfo("/proc/meminfo");
  std::string   key;
  int64_t       kB = 0;
  std::string   unit;
  while (meminfo >> key >> kB >> unit)
  {
    if (key == "MemAvailable:")
    {
      return kB * 1024;
    }
  }
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long size = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && size > 0 ? static_cast<int64_t>(pages) * size : INT64_MAX;
}

std::string
bytesText(double bytes)
{
  char text[32];
  if (bytes >= 1e9)
  {
    std::snprintf(text, sizeof text, "%.1f GB", bytes / 1e9);
  }
  else
  {
    std::snprintf(text, sizeof text, "%.0f MB", bytes / 1e6);
  }
  return text;
}

} // namespace impact
