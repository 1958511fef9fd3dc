// Feature distances D(f, m) of eq. 6/9, written with differentiable torch operations so that
// dD/dm comes from autograd in both modes.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace impact
{

enum class Distance
{
  L1,
  L2,
  Cosine,
  L1Cosine,
  Dice,
  NCC,
  DotProduct
};

/** Parses a distance name; throws std::invalid_argument listing the allowed names. */
Distance
parseDistance(const std::string & name);

std::string
toString(Distance distance);

const std::vector<std::string> &
distanceNames();

/** Mean distance between fixed and moving features.
 *  f, m: (N, C, *spatial) with N samples and C channels; spatial may be empty.
 *  Every distance is averaged over samples and spatial positions, so the value does not depend on
 *  how many samples survive the masks:
 *    L1        mean_c |f - m|
 *    L2        mean_c (f - m)^2
 *    Cosine    1 - <f, m> / (|f| |m|)
 *    L1Cosine  L1 + Cosine
 *    Dice      1 - 2 <f, m> / (|f|^2 + |m|^2)
 *    NCC       1 - mean_c corr_c(f, m), the correlation of each channel across all samples and positions
 *    DotProduct -<f, m> / C
 *  Returns a 0-dim tensor. */
torch::Tensor
distance(Distance kind, const torch::Tensor & f, const torch::Tensor & m);

} // namespace impact
