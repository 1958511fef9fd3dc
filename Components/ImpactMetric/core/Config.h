// IMPACT parameters of one resolution level, parsed and validated from an elastix parameter map.
// Both spellings in use are accepted:
//   the IMPACT README's (PatchSize "5*5*5 7*7*7" "3*3*3")  one quoted entry per level, models space-separated;
//   elastix 5.3.1 (ImpactPatchSize0 5 5 5 7 7 7)     one parameter per level, values concatenated.
// A level without its own value reuses level 0's.
#pragma once

#include "Distances.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace impact
{

/** A malformed parameter; the message names the parameter (as spelled in the map), the value and
 *  what is allowed. */
class ParameterError : public std::invalid_argument
{
public:
  using std::invalid_argument::invalid_argument;
};

enum class Mode
{
  Jacobian,
  Static
};

/** One feature extractor as configured for one side (fixed or moving). */
struct ModelSpec
{
  std::string          path;
  int                  dimension{ 3 };
  int                  channels{ 1 };
  std::vector<int64_t> patchSize;  // (dimension), x first; 0 = whole axis (Static mode only)
  std::vector<double>  voxelSize;  // (dimension) mm, x first
  std::string          layersMask; // one '0'/'1' per model output
  std::string          pathHint;   // appended to a missing-file error: how the path was read
};

/** One selected output layer (a '1' of a LayersMask) with its comparison settings. */
struct LayerSpec
{
  int      model{};          // index into LevelConfig::fixedModels / movingModels
  int      output{};         // index of the model output
  int64_t  subsetFeatures{}; // channels drawn per iteration; 0 = all
  bool     subsetFeaturesGiven{ false }; // set by the map (the default 32 means all of fewer channels)
  int64_t  pca{};            // principal components kept (Static mode); 0 = off
  Distance distance{ Distance::L2 };
  double   weight{ 1.0 };    // gamma_l
};

/** RandomSeed when a map gives none (elastix's own default seed is time-based; runs here are
 *  reproducible unless asked otherwise). */
inline constexpr uint64_t defaultRandomSeed = 121212;

/** Which planes a 2D model sees of a 3D image in Jacobian mode, one per sample point. */
enum class PlaneSampling
{
  Oblique,  // uniformly random orientation (the paper's random planes)
  Principal // one of the image's three axis planes, at random
};

struct LevelConfig
{
  Mode                   mode{ Mode::Jacobian };
  int                    gpu{ -1 };
  bool                   gpuFallback{ false };
  bool                   mixedPrecision{ false };
  PlaneSampling          planeSampling{ PlaneSampling::Oblique };
  int                    featuresMapUpdateInterval{ -1 };
  int64_t                maximumSamples{ 0 }; // sample points used per evaluation, evenly spread; 0 = all
  double                 memoryLimitGB{ 0 };  // what a level may use; 0 = the machine's available memory
  std::string            featureMapDirectory; // empty = do not write
  std::vector<ModelSpec> fixedModels;
  std::vector<ModelSpec> movingModels; // same length as fixedModels; equal to it unless Fixed*/Moving* are used
  std::vector<LayerSpec> layers;
};

/** Raw entries of a parameter, or nullopt when the map does not have it. */
using ParameterLookup = std::function<std::optional<std::vector<std::string>>(const std::string &)>;

/** Parses the IMPACT parameters of resolution level `level`; throws ParameterError. */
LevelConfig
parseLevel(const ParameterLookup & lookup, unsigned level);

/** Every parameter name parseLevel may read for `levels` levels (both spellings), for checks of
 *  unknown parameters. */
std::vector<std::string>
knownParameterNames(unsigned levels);

} // namespace impact
