// impact-elastix: IMPACT as an ITK (elastix "advanced") image metric: samples, transform, chain rule.
#pragma once

#include "itkAdvancedImageToImageMetric.h"

#include "core/Engine.h"

#include <memory>

namespace itk
{

/** \class ImpactSemanticMetric
 * \brief IMPACT: a semantic similarity comparing features of pretrained networks (Boussot et al.).
 *
 * Per call, the image sampler's fixed points x_i are mapped to y_i = T(x_i); the points inside the
 * moving image and mask go to an impact::Engine, which returns S (eq. 6 or 9) and dS/dy_i (by
 * backpropagation through the model in Jacobian mode, from B-spline feature maps in Static mode).
 * This class only chains dS/dy_i with the sparse transform Jacobian dT(x_i)/dtheta (eq. 8, 10).
 *
 * The engine is rebuilt in Initialize(), i.e. once per resolution level, from the configuration
 * given by SetLevelConfig().
 */
template <typename TFixedImage, typename TMovingImage>
class ITK_TEMPLATE_EXPORT ImpactSemanticMetric : public AdvancedImageToImageMetric<TFixedImage, TMovingImage>
{
public:
  using Self = ImpactSemanticMetric;
  using Superclass = AdvancedImageToImageMetric<TFixedImage, TMovingImage>;
  using Pointer = SmartPointer<Self>;
  itkNewMacro(Self);
  itkOverrideGetNameOfClassMacro(ImpactSemanticMetric);

  // Our names for the superclass types this metric works with.
  using ParameterVector = typename Superclass::ParametersType;   // theta
  using MetricValue = typename Superclass::MeasureType;          // S
  using MetricDerivative = typename Superclass::DerivativeType;  // dS/dtheta
  using FixedPoint = typename Superclass::FixedImagePointType;   // x_i
  using MovingPoint = typename Superclass::MovingImagePointType; // y_i = T(x_i)
  using JacobianIndices = typename Superclass::NonZeroJacobianIndicesType;
  using SpatialGradient = typename Superclass::AdvancedTransformType::MovingImageGradientType;
  static constexpr unsigned int Dimension = TFixedImage::ImageDimension;

  /** What the next Initialize() builds the engine from. */
  void
  SetLevelConfig(const impact::LevelConfig & config)
  {
    m_LevelConfig = config;
  }
  void
  SetModelCache(std::shared_ptr<impact::ModelCache> cache)
  {
    m_ModelCache = std::move(cache);
  }
  void
  SetEngineOptions(const impact::Engine::Options & options)
  {
    m_EngineOptions = options;
  }

  const impact::LevelConfig &
  GetLevelConfig() const
  {
    return m_LevelConfig;
  }

  /** The engine of the current level (after Initialize()). */
  const impact::Engine *
  GetEngine() const
  {
    return m_Engine.get();
  }

  void
  Initialize() override;

  /** Static mode with FeaturesMapUpdateInterval > 0: recomputes the moving feature maps on the moving
   *  image warped by the transform with these parameters. */
  void
  UpdateMovingFeatures(const ParameterVector & theta);

  /** S(theta), dS/dtheta, or both (the elastix metric interface). */
  MetricValue GetValue(const ParameterVector & theta) const override;
  void        GetValueAndDerivative(const ParameterVector & theta, MetricValue & value, MetricDerivative & derivative) const override;
  void        GetDerivative(const ParameterVector & theta, MetricDerivative & derivative) const override
  {
    MetricValue unused{}; // computing S costs nothing extra once the features are there
    GetValueAndDerivative(theta, unused, derivative);
  }

  /** An ITK image as a (*spatial) float32 tensor (a copy) with its geometry. */
  template <typename TImage>
  static std::pair<torch::Tensor, impact::Geometry>
  ImageToTensor(const TImage & image);

  /** The physical geometry of an ITK image's buffer. */
  template <typename TImage>
  static impact::Geometry
  GeometryOf(const TImage & image);

protected:
  ~ImpactSemanticMetric() override = default;
  ImpactSemanticMetric()
  {
    // Points come from elastix's image sampler; no intensity limiters; and no ITK gradient images,
    // since the moving-image gradient comes from our own B-spline coefficients.
    this->SetUseImageSampler(true);
    this->SetUseFixedImageLimiter(false);
    this->SetUseMovingImageLimiter(false);
    this->SetComputeGradient(false);
  }

private:
  /** The sampler's points that map inside the moving image and mask: x_i and y_i as (N, D) float64. */
  struct Samples
  {
    std::vector<FixedPoint> fixedPoints;
    torch::Tensor                    fixed, moving;
  };
  Samples
  CollectSamples(const ParameterVector & theta) const;

  impact::LevelConfig                 m_LevelConfig;
  std::shared_ptr<impact::ModelCache> m_ModelCache;
  impact::Engine::Options             m_EngineOptions;
  std::unique_ptr<impact::Engine>     m_Engine;
  impact::Geometry                    m_MovingGeometry;
  mutable bool                        m_ReportedSampleLimit{ false }; // the sample limit is logged once per level

  ITK_DISALLOW_COPY_AND_MOVE(ImpactSemanticMetric);
};

} // end namespace itk

#include "itkImpactSemanticMetric.hxx"
