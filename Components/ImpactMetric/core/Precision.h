// Mixed precision for model runs (UseMixedPrecision): which reduced type a device runs fast, and
// an autocast scope that restores the caller's autocast state afterwards (no process-wide flag is
// left changed).
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>

namespace impact
{

/** True when the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16), read at run time.
 *  The environment variable IMPACT_CPU_BFLOAT16=1 or 0 overrides the detection (tests, diagnosis). */
bool
cpuHasNativeBFloat16();

/** The type models run in under (UseMixedPrecision "true") on `device`: float16 on CUDA, bfloat16 on
 *  a CPU with native bfloat16, nullopt (float32) otherwise. `why` says which and why, for the log. */
std::optional<at::ScalarType>
mixedPrecisionType(torch::Device device, std::string & why);

/** Autocast to `type` on `device` for the lifetime of the scope; nothing when type is nullopt. */
class AutocastScope
{
public:
  AutocastScope(torch::Device device, std::optional<at::ScalarType> type);
  ~AutocastScope();
  AutocastScope(const AutocastScope &) = delete;
  AutocastScope &
  operator=(const AutocastScope &) = delete;

private:
  at::DeviceType m_Device;
  bool           m_Active{ false };
  bool           m_WasEnabled{ false };
  at::ScalarType m_PreviousType{ at::kFloat };
};

} // namespace impact
