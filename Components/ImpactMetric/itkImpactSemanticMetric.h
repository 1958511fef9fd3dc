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

  using ParametersType = typename Superclass::ParametersType;      // theta
  using MeasureType = typename Superclass::MeasureType;         // S
  using DerivativeType = typename Superclass::DerivativeType;      // dS/dtheta
  using FixedImagePointType = typename Superclass::FixedImagePointType; // x_i
  using MovingImagePointType = typename Superclass::MovingImagePointType; // y_i = T(x_i)
  using NonZeroJacobianIndicesType = typename Superclass::NonZeroJacobianIndicesType;
  using MovingImageGradientType = typename Superclass::AdvancedTransformType::MovingImageGradientType;
  static constexpr unsigned int Dimension = TFixedImage::ImageDimension;

  /** What the next Initialize() builds the engine from: this level's parameters, the models shared
   *  by all levels, and the engine's options (seed, logging, Static cache). */
  void
  SetLevelConfig(const impact::LevelConfig & config)
  {
    m_LevelConfig = config;
    this->Modified();
  }
  itkGetConstReferenceMacro(LevelConfig, impact::LevelConfig);
  itkSetMacro(ModelCache, std::shared_ptr<impact::ModelCache>);
  void
  SetEngineOptions(const impact::Engine::Options & options)
  {
    m_EngineOptions = options;
    this->Modified();
  }

  /** Where errors come from, for their messages: elastix's component label ("Metric0") and the
   *  resolution level. Every error of this metric leaves as an itk::ExceptionObject whose message
   *  starts "IMPACT (Metric0) parameter error at resolution 1: " for a parameter the map can change,
   *  and "IMPACT (Metric0) error at resolution 1: " otherwise. */
  void
  SetErrorContext(const std::string & label, unsigned int level)
  {
    m_ErrorLabel = label;
    m_ErrorLevel = level;
  }

  /** Throws `error` as this metric's itk::ExceptionObject (see SetErrorContext). */
  [[noreturn]] void
  ThrowError(const std::exception & error) const;

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
  UpdateMovingFeatures(const ParametersType & theta);

  /** S(theta), dS/dtheta, or both (the elastix metric interface). */
  MeasureType
  GetValue(const ParametersType & theta) const override;
  void
  GetValueAndDerivative(const ParametersType & theta, MeasureType & value, DerivativeType & derivative) const override;
  void
  GetDerivative(const ParametersType & theta, DerivativeType & derivative) const override
  {
    MeasureType unused{}; // computing S costs nothing extra once the features are there
    GetValueAndDerivative(theta, unused, derivative);
  }

protected:
  ~ImpactSemanticMetric() override = default;
  void
  PrintSelf(std::ostream & os, Indent indent) const override;

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
    std::vector<FixedImagePointType> fixedPoints;
    torch::Tensor                    fixed, moving;
  };
  Samples
  CollectSamples(const ParametersType & theta) const;

  impact::LevelConfig                 m_LevelConfig;
  std::shared_ptr<impact::ModelCache> m_ModelCache;
  impact::Engine::Options             m_EngineOptions;
  std::unique_ptr<impact::Engine>     m_Engine;
  impact::Geometry                    m_MovingGeometry;
  mutable bool                        m_ReportedSampleLimit{ false }; // the sample limit is logged once per level
  std::string                         m_ErrorLabel;
  unsigned int                        m_ErrorLevel{ 0 };

  ITK_DISALLOW_COPY_AND_MOVE(ImpactSemanticMetric);
};

} // end namespace itk

#include "itkImpactSemanticMetric.hxx"
