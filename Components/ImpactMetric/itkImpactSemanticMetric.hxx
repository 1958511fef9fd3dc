// impact-elastix: IMPACT as an ITK image metric (implementation).
#pragma once

#include "itkImpactSemanticMetric.h"
#include "itkImpactImageTensor.h"

#include <cmath>
#include <ostream>
#include <sstream>

namespace itk
{

template <typename TFixedImage, typename TMovingImage>
void
ImpactSemanticMetric<TFixedImage, TMovingImage>::Initialize()
{
  this->Superclass::Initialize();
  if (!m_ModelCache)
  {
    ThrowError(std::logic_error("no model cache set; SetModelCache() must be called before Initialize()"));
  }
  m_Engine.reset(); // free the previous level's feature maps first
  m_ReportedSampleLimit = false;
  auto [fixed, fixedGeometry] = impact::imageToTensor(*this->GetFixedImage());
  auto [moving, movingGeometry] = impact::imageToTensor(*this->GetMovingImage());
  m_MovingGeometry = movingGeometry;
  try
  {
    m_Engine = std::make_unique<impact::Engine>(m_LevelConfig,
                                                *m_ModelCache,
                                                impact::makeSideImage(fixed, fixedGeometry),
                                                impact::makeSideImage(moving, movingGeometry),
                                                m_EngineOptions);
  }
  catch (const std::exception & e)
  {
    ThrowError(e);
  }
}

template <typename TFixedImage, typename TMovingImage>
void
ImpactSemanticMetric<TFixedImage, TMovingImage>::UpdateMovingFeatures(const ParametersType & theta)
{
  this->SetTransformParameters(theta);
  const auto mapping = [this](const torch::Tensor & points) {
    const auto in = points.to(torch::kFloat64).contiguous();
    auto       out = torch::empty_like(in);
    const auto p = in.template data_ptr<double>();
    const auto q = out.template data_ptr<double>();
    // TransformPoint is const and thread-safe; the grid has millions of points.
    at::parallel_for(0, in.size(0), 4096, [&](int64_t begin, int64_t end) {
      FixedImagePointType x;
      for (int64_t i = begin; i < end; ++i)
      {
        for (unsigned int a = 0; a < Dimension; ++a)
        {
          x[a] = p[i * Dimension + a];
        }
        const auto y = this->TransformPoint(x);
        for (unsigned int a = 0; a < Dimension; ++a)
        {
          q[i * Dimension + a] = y[a];
        }
      }
    });
    return out;
  };
  try
  {
    m_Engine->updateMovingFeatures(mapping);
  }
  catch (const std::exception & e)
  {
    ThrowError(e);
  }
}

template <typename TFixedImage, typename TMovingImage>
auto
ImpactSemanticMetric<TFixedImage, TMovingImage>::CollectSamples(const ParametersType & theta) const
  -> Samples
{
  this->BeforeThreadedGetValueAndDerivative(theta);
  const auto & sampleContainer = *this->GetImageSampler()->GetOutput();
  Samples      samples;
  samples.fixedPoints.reserve(sampleContainer.size());
  std::vector<double> fixed, moving;
  fixed.reserve(sampleContainer.size() * Dimension);
  moving.reserve(sampleContainer.size() * Dimension);
  // At most MaximumSamplesPerEvaluation samples, evenly spread over the sampler's list (for a grid
  // sampler, a coarser grid), so that a call is bounded whatever the sampler was asked for.
  const auto   available = static_cast<int64_t>(sampleContainer.size());
  const auto   limit = m_LevelConfig.maximumSamples;
  const auto   used = limit > 0 ? std::min(available, limit) : available;
  if (used < available && !m_ReportedSampleLimit)
  {
    m_ReportedSampleLimit = true;
    if (m_EngineOptions.info)
    {
      m_EngineOptions.info("IMPACT: the image sampler gave " + std::to_string(available) +
                           " samples for one evaluation (ASGD's NumberOfSamplesForExactGradient, elastix default "
                           "100000, does this when it estimates the step size); IMPACT uses an evenly spread " +
                           std::to_string(used) + " of them, each a patch through the model. Set "
                           "(MaximumSamplesPerEvaluation 0) to use all, or lower NumberOfSamplesForExactGradient.");
    }
  }
  const double stride = static_cast<double>(available) / static_cast<double>(std::max<int64_t>(used, 1));
  for (int64_t k = 0; k < used; ++k)
  {
    const auto &      sample = sampleContainer[static_cast<size_t>(used < available ? std::floor(k * stride) : k)];
    const FixedImagePointType  x = sample.m_ImageCoordinates;
    const MovingImagePointType y = this->TransformPoint(x);
    if (!this->IsInsideMovingMask(y))
    {
      continue;
    }
    samples.fixedPoints.push_back(x);
    for (unsigned int a = 0; a < Dimension; ++a)
    {
      fixed.push_back(x[a]);
      moving.push_back(y[a]);
    }
  }
  const auto n = static_cast<int64_t>(samples.fixedPoints.size());
  samples.fixed = torch::from_blob(fixed.data(), { n, Dimension }, torch::kFloat64).clone();
  samples.moving = torch::from_blob(moving.data(), { n, Dimension }, torch::kFloat64).clone();
  // Keep the samples whose mapped point lies inside the moving image.
  const auto inside = m_MovingGeometry.contains(samples.moving);
  if (!inside.all().item().toBool())
  {
    const auto keep = torch::nonzero(inside).flatten();
    samples.fixed = samples.fixed.index_select(0, keep);
    samples.moving = samples.moving.index_select(0, keep);
    std::vector<FixedImagePointType> kept;
    const auto *                     k = keep.template data_ptr<int64_t>();
    for (int64_t i = 0; i < keep.numel(); ++i)
    {
      kept.push_back(samples.fixedPoints[k[i]]);
    }
    samples.fixedPoints.swap(kept);
  }
  this->m_NumberOfPixelsCounted = samples.fixedPoints.size();
  // elastix's CheckNumberOfSamples(), measured against the samples used rather than all the sampler's.
  if (static_cast<double>(samples.fixedPoints.size()) < this->GetRequiredRatioOfValidSamples() * static_cast<double>(used))
  {
    itkExceptionMacro("Too many samples map outside moving image buffer: " << samples.fixedPoints.size() << " / "
                                                                           << used << '\n');
  }
  return samples;
}

template <typename TFixedImage, typename TMovingImage>
auto
ImpactSemanticMetric<TFixedImage, TMovingImage>::GetValue(const ParametersType & theta) const -> MeasureType
{
  const auto samples = CollectSamples(theta);
  try
  {
    return m_Engine->evaluate(samples.fixed, samples.moving, false).value;
  }
  catch (const std::exception & e)
  {
    ThrowError(e);
  }
}

template <typename TFixedImage, typename TMovingImage>
void
ImpactSemanticMetric<TFixedImage, TMovingImage>::GetValueAndDerivative(const ParametersType & theta,
                                                                           MeasureType &          value,
                                                                           DerivativeType &       derivative) const
{
  const auto             samples = CollectSamples(theta);
  impact::Engine::Result result;
  try
  {
    result = m_Engine->evaluate(samples.fixed, samples.moving, true);
  }
  catch (const std::exception & e)
  {
    ThrowError(e);
  }
  value = result.value;
  // eq. 8/10: dS/dtheta = sum_i dS/dy_i . dT(x_i)/dtheta, over the sparse Jacobian of each point.
  derivative.SetSize(this->GetNumberOfParameters());
  derivative.Fill(0.0);
  const auto                 g = result.gradient.contiguous();
  const double *             gi = g.template data_ptr<double>();
  DerivativeType             imageJacobian(this->m_AdvancedTransform->GetNumberOfNonZeroJacobianIndices());
  NonZeroJacobianIndicesType nzji(imageJacobian.GetSize());
  MovingImageGradientType    gradient;
  for (size_t i = 0; i < samples.fixedPoints.size(); ++i, gi += Dimension)
  {
    for (unsigned int a = 0; a < Dimension; ++a)
    {
      gradient[a] = gi[a];
    }
    this->m_AdvancedTransform->EvaluateJacobianWithImageGradientProduct(
      samples.fixedPoints[i], gradient, imageJacobian, nzji);
    for (size_t j = 0; j < nzji.size(); ++j)
    {
      derivative[nzji[j]] += imageJacobian[j];
    }
  }
}

template <typename TFixedImage, typename TMovingImage>
void
ImpactSemanticMetric<TFixedImage, TMovingImage>::ThrowError(const std::exception & error) const
{
  std::ostringstream message;
  message << "IMPACT";
  if (!m_ErrorLabel.empty())
  {
    message << " (" << m_ErrorLabel << ")";
  }
  message << (dynamic_cast<const impact::ParameterError *>(&error) ? " parameter error" : " error");
  if (!m_ErrorLabel.empty())
  {
    message << " at resolution " << m_ErrorLevel;
  }
  message << ": " << error.what();
  itkExceptionMacro(<< message.str());
}

template <typename TFixedImage, typename TMovingImage>
void
ImpactSemanticMetric<TFixedImage, TMovingImage>::PrintSelf(std::ostream & os, Indent indent) const
{
  Superclass::PrintSelf(os, indent);
  const auto & c = m_LevelConfig;
  os << indent << "Mode: " << (c.mode == impact::Mode::Static ? "Static" : "Jacobian") << '\n';
  os << indent << "GPU: " << c.gpu << (c.mixedPrecision ? " (mixed precision)" : "") << '\n';
  os << indent << "MaximumSamplesPerEvaluation: " << c.maximumSamples << '\n';
  for (size_t i = 0; i < c.fixedModels.size(); ++i)
  {
    for (const auto * spec : { &c.fixedModels[i], &c.movingModels[i] })
    {
      os << indent << (spec == &c.fixedModels[i] ? "Fixed" : "Moving") << " model " << i << ": " << spec->path
         << ", PatchSize " << impact::sizeText(spec->patchSize) << ", LayersMask " << spec->layersMask << '\n';
    }
  }
  os << indent << "Selected layers: " << c.layers.size() << '\n';
  os << indent << "Engine: " << (m_Engine ? "built for this level" : "none (before Initialize)") << '\n';
  if (m_Engine)
  {
    const auto & s = m_Engine->statistics();
    os << indent << "Evaluations: " << s.evaluations << ", samples: " << s.samples << ", seconds: " << s.seconds << '\n';
  }
}

} // end namespace itk
