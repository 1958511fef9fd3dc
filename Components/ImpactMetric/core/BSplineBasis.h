// The cubic B-spline basis shared by the samplers: tap weights and mirror boundary indexing.
#pragma once

#include <cmath>
#include <cstdint>

namespace impact::basis
{

/** Index i folded into [0, n) by mirror reflection (the boundary of ITK's B-spline decomposition). */
inline int64_t
mirror(int64_t i, int64_t n)
{
  if (i >= 0 && i < n)
  {
    return i;
  }
  if (n == 1)
  {
    return 0;
  }
  const int64_t period = 2 * n - 2;
  i = ((i % period) + period) % period;
  return i < n ? i : period - i;
}

/** Weights w of the 4 taps floor(x)-1 .. floor(x)+2 for x = floor(x) + t, and their derivatives dw. */
inline void
cubicWeights(double t, double * w, double * dw)
{
  const double t2 = t * t, t3 = t2 * t, s = 1.0 - t;
  w[0] = s * s * s / 6.0;
  w[1] = (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0;
  w[2] = (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0;
  w[3] = t3 / 6.0;
  dw[0] = -0.5 * s * s;
  dw[1] = 1.5 * t2 - 2.0 * t;
  dw[2] = -1.5 * t2 + t + 0.5;
  dw[3] = 0.5 * t2;
}

/** The 4 taps of continuous index x along an axis of n samples with element stride `stride`:
 *  weights, derivative weights and element offsets. */
struct Taps
{
  double  w[4], dw[4];
  int64_t offset[4];

  void
  set(double x, int64_t n, int64_t stride)
  {
    const double fl = std::floor(x);
    cubicWeights(x - fl, w, dw);
    const auto first = static_cast<int64_t>(fl) - 1;
    for (int k = 0; k < 4; ++k)
    {
      offset[k] = mirror(first + k, n) * stride;
    }
  }
};

} // namespace impact::basis
