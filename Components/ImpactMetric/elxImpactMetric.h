// impact-elastix: the elastix component "Impact" (parameters per level, logging, feature-map output).
#pragma once

#include "elxIncludes.h"
#include "itkImpactSemanticMetric.h"

namespace elastix
{

/** The ITK side of the component, on the image types of an elastix instantiation. */
template <typename TElastix>
using ImpactSemanticMetricFor = itk::ImpactSemanticMetric<typename MetricBase<TElastix>::FixedImageType,
                                                          typename MetricBase<TElastix>::MovingImageType>;

/** \class ImpactMetric
 * \brief IMPACT: similarity of deep features of pretrained TorchScript models.
 *
 * The parameters are read per resolution level, under the IMPACT README's names or elastix 5.3.1's
 * Impact-prefixed, level-suffixed names (ImpactModelsPath0, ImpactPatchSize0, ...). As for every
 * elastix metric, a name prefixed with the component label is read first, so that several Impact
 * metrics in one map are configured apart: (Metric "Impact" "Impact") with Metric0ModelsPath,
 * Metric1ModelsPath, Metric1Mode, ...
 *
 * \parameter Metric: Select this metric as follows:\n
 *   <tt>(Metric "Impact")</tt>
 * \parameter ModelsPath: TorchScript model file(s), space-separated for several models; one quoted
 *   entry per resolution level. "MIND/R<r>D<d>" and "MIND-SSC/R<r>D<d>" (e.g. "MIND/R1D2") select
 *   the built-in MIND / MIND-SSC descriptor (patch radius r, neighbour distance d, 2D or 3D) when no
 *   file exists at that path.\n
 *   example: <tt>(ModelsPath "/Models/TS/M730_1_Layers.pt MIND/R1D2")</tt>
 * \parameter FixedModelsPath, MovingModelsPath: different models for the two images; every model
 *   parameter below then also takes a Fixed/Moving prefix.
 * \parameter Dimension: 2 or 3, the model's input dimension, one per model. Default: 3.
 *   A 2D model on 3D images sees one plane per sample point (Jacobian; see PlaneSampling) or the
 *   image slice by slice along its third axis (Static).
 * \parameter PlaneSampling: Jacobian mode, 2D models on 3D images: "Principal" (one of the image's
 *   three axis planes per sample, at random) or "Oblique" (a uniformly random orientation per
 *   sample). Default: Oblique (README: the two are within a few hundredths of a mm of each other on
 *   the BrainWeb and lung benchmarks).
 * \parameter NumberOfChannels: input channels of each model; the image is replicated. Default: 1.
 * \parameter PatchSize: patch size in voxels per model, as "5*5*5"; at least the field of view of the
 *   selected layers. "0*0*0" in Static mode runs the whole image. Default: 5*5*5.
 * \parameter VoxelSize: spacing in mm at which the model sees the image, as "1.5*1.5*1.5". Default: 1.5.
 * \parameter LayersMask: one 0/1 per model output selecting the compared layers. Default: "1".
 * \parameter SubsetFeatures: channels drawn at random per call, per selected layer (or per model, or
 *   one for all); 0 = all. Default: 32.
 * \parameter LayersWeight: weight gamma_l of each selected layer. Default: 1.
 * \parameter Distance: L1, L2, Cosine, L1Cosine, Dice, NCC or DotProduct, per selected layer. Default: L2.
 * \parameter PCA: Static mode: principal components kept per layer; 0 = off. Default: 0.
 * \parameter Mode: "Jacobian" (backpropagation through the model) or "Static" (feature maps
 *   precomputed per level). One entry per level. Default: Jacobian.
 * \parameter GPU: CUDA device index, -1 = CPU. Default: -1.
 * \parameter GPUFallback: "true" runs on the CPU with a warning when CUDA is missing. Default: false.
 * \parameter FeaturesMapUpdateInterval: Static mode: -1 = feature maps once per level; N > 0 also
 *   recomputes the moving features every N iterations on the moving image warped by the current
 *   transform. Default: -1.
 * \parameter WriteFeatureMaps: "false" or a directory; Static mode writes the model inputs and the
 *   feature maps of each level there as .mha. Default: false.
 * \parameter UseMixedPrecision: "true" runs the models in a reduced type: float16 autocast on CUDA,
 *   bfloat16 autocast on CPUs with native bfloat16 (AVX512-BF16 or AMX; about 2x faster there), and
 *   float32 with one log line on other CPUs. Distances and gradients stay float32/float64. Default: false.
 * \parameter MaximumSamplesPerEvaluation: at most this many of the image sampler's points per metric
 *   evaluation, evenly spread; 0 = all. Bounds ASGD's step-size estimation, which asks for
 *   NumberOfSamplesForExactGradient (elastix default 100000) points at once. Default: 10000 in
 *   Jacobian mode (a patch through the model per point), 0 in Static mode.
 * \parameter MemoryLimit: GB a level may use; a level whose estimate (Static feature maps, Jacobian
 *   patches) exceeds it stops before it starts, naming the estimate. Default: 0 = the memory the
 *   machine has available.
 * \parameter RandomSeed: seed of the channel subsets and 2D planes (the sampler has its own). Default: 121212.
 *
 * \ingroup Metrics
 */
template <typename TElastix>
class ITK_TEMPLATE_EXPORT ImpactMetric
  : public ImpactSemanticMetricFor<TElastix>
  , public MetricBase<TElastix>
{
public:
  using Self = ImpactMetric;
  using Pointer = itk::SmartPointer<Self>;
  using ElastixMetric = MetricBase<TElastix>;
  using ITKMetric = ImpactSemanticMetricFor<TElastix>;
  itkNewMacro(Self);
  itkOverrideGetNameOfClassMacro(ImpactMetric);
  elxClassNameMacro("Impact"); // the name maps select with (Metric "Impact")

  // elastix's hooks, in the order elastix calls them:
  void BeforeRegistration() override;   // model cache and seed shared by all levels; loads nothing
  void BeforeEachResolution() override; // reads and validates this level's IMPACT parameters
  void Initialize() override;           // the level's engine: models checked, Static maps computed
  void AfterEachIteration() override;   // Static: moving features every FeaturesMapUpdateInterval
  void AfterEachResolution() override;  // logs the level's cost (calls, samples, patches, seconds)

protected:
  ~ImpactMetric() override = default;
  ImpactMetric() = default;

private:
  elxOverrideGetSelfMacro;

  /** WriteFeatureMaps / FeatureMapOutputDirectory: the model inputs and feature maps of a level. */
  void
  WriteFeatureMaps(unsigned int level) const;

  std::shared_ptr<impact::ModelCache>  m_Models;
  std::shared_ptr<impact::StaticCache> m_StaticMaps; // Static: maps reused by a level with identical inputs
  unsigned int                        m_IterationsThisLevel{ 0 };

  ITK_DISALLOW_COPY_AND_MOVE(ImpactMetric);
};

} // end namespace elastix

#include "elxImpactMetric.hxx"
