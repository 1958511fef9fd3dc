// MIND and MIND-SSC (Heinrich et al. 2012, 2013) built into the component: a model name such as
// "MIND/R1D2" or "MIND-SSC/R2D2" in ModelsPath needs no file. Same definition, channel order and
// output as the TorchScript export of python/impact_elastix/models/mind.py (tested to 1e-5):
//
//   D(x; a, b) = 1/|P| sum_{p in P} (I(x + a + p) - I(x + b + p))^2,  P = {-r..r}^dim, I replicated,
//   MIND: pairs (0, n), n in {±d e_k};  MIND-SSC: pairs of those neighbours sqrt(2) d apart;
//   channel = exp(-(D - min_c D) / V), V = mean_c (D - min_c D) clamped to [1e-3, 1e3] x its mean
//   over the image.
//
// Computed with torch operations (so autograd gives the input gradient in Jacobian mode), but each
// distinct difference vector b - a once: D(x; a, b) = box(S_{b-a})(x + a) with
// S_v(y) = (I(y) - I(y + v))^2, and the box filter separable. MIND needs dim such fields instead
// of 2 dim, MIND-SSC 6 instead of 12 in 3D.
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

namespace impact
{

struct MindSpec
{
  int  radius{ 1 };   // patch radius r
  int  dilation{ 2 }; // neighbour distance d
  bool ssc{ false };  // self-similarity context instead of centre-to-neighbour pairs
};

/** The built-in descriptor a ModelsPath entry names ("MIND/R1D2", "mind-ssc/r2d2", ...), or nothing
 *  when `name` is not of that form. Throws std::runtime_error for "MIND/..." with a malformed variant. */
std::optional<MindSpec>
builtinMind(const std::string & name);

/** Descriptor channels per input channel: 2 dim (MIND) or the sqrt(2) d neighbour pairs (MIND-SSC:
 *  4 in 2D, 12 in 3D). */
int64_t
mindChannels(const MindSpec & spec, int dimension);

/** x: (N, C, *spatial), 2 or 3 spatial axes, float -> one output (N, C * mindChannels, *spatial). */
std::vector<torch::Tensor>
mind(const torch::Tensor & x, const MindSpec & spec);

} // namespace impact
