#include "Precision.h"

#include <ATen/autocast_mode.h>
#include <ATen/cpu/Utils.h>

#include <cstdlib>

namespace impact
{

bool
cpuHasNativeBFloat16()
{
  if (const char * force = std::getenv("IMPACT_CPU_BFLOAT16"); force && (force[0] == '0' || force[0] == '1'))
  {
    return force[0] == '1';
  }
  const auto capabilities = at::cpu::get_cpu_capabilities();
  const auto has = [&capabilities](const char * name) {
    const auto it = capabilities.find(name);
    return it != capabilities.end() && it->second.isBool() && it->second.toBool();
  };
  return has("avx512_bf16") || has("amx_bf16");
}

std::optional<at::ScalarType>
mixedPrecisionType(torch::Device device, std::string & why)
{
  if (device.is_cuda())
  {
    why = "float16 autocast on " + device.str();
    return at::kHalf;
  }
  if (cpuHasNativeBFloat16())
  {
    why = "bfloat16 autocast on the CPU (it has native bfloat16 instructions); distances and gradients in float32";
    return at::kBFloat16;
  }
  why = "this CPU has no native bfloat16 instructions (AVX512-BF16 or AMX), where bfloat16 is slower than float32: "
        "models run in float32";
  return std::nullopt;
}

AutocastScope::AutocastScope(torch::Device device, std::optional<at::ScalarType> type)
  : m_Device(device.type())
{
  if (!type)
  {
    return;
  }
  m_Active = true;
  m_WasEnabled = at::autocast::is_autocast_enabled(m_Device);
  m_PreviousType = at::autocast::get_autocast_dtype(m_Device);
  at::autocast::set_autocast_dtype(m_Device, *type);
  at::autocast::set_autocast_enabled(m_Device, true);
}

AutocastScope::~AutocastScope()
{
  if (!m_Active)
  {
    return;
  }
  at::autocast::set_autocast_enabled(m_Device, m_WasEnabled);
  at::autocast::set_autocast_dtype(m_Device, m_PreviousType);
  if (!m_WasEnabled)
  {
    at::autocast::clear_cache();
  }
}

} // namespace impact
