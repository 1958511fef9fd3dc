// impact-elastix: IMPACT as an ITK image metric (implementation).
#pragma once

#include "itkImpactSemanticMetric.h"

#include <cmath>
#include <type_traits>

namespace itk
{

template <typename TFixedImage, typename TMovingImage>
template <typename TImage>
impact::Geometry
ImpactSemanticMetric<TFixedImage, TMovingImage>::GeometryOf(const TImage & image)
{
  constexpr unsigned int     D = TImage::ImageDimension;
  const auto                 region = image.GetBufferedRegion();
  impact::Geometry           geometry;
  typename TImage::PointType origin;
  image.TransformIndexToPhysicalPoint(region.GetIndex(), origin);
  for (unsigned int a = 0; a < D; ++a)
  {
    geometry.size.push_back(static_cast<int64_t>(region.GetSize()[a]));
    geometry.origin.push_back(origin[a]);
    geometry.spacing.push_back(image.GetSpacing()[a]);
    for (unsigned int b = 0; b < D; ++b)
    {
      geometry.direction.push_back(image.GetDirection()[a][b]);
    }
  }
  return geometry;
}

template <typename TFixedImage, typename TMovingImage>
template <typename TImage>
std::pair<torch::Tensor, impact::Geometry>
ImpactSemanticMetric<TFixedImage, TMovingImage>::ImageToTensor(const TImage & image)
{
  const auto geometry = GeometryOf(image);
  const auto region = image.GetBufferedRegion();
  using Pixel = typename TImage::PixelType;
  const auto shape = impact::tensorShape(geometry);
  auto *     buffer = const_cast<Pixel *>(image.GetBufferPointer());
  if constexpr (std::is_same_v<Pixel, float>)
  {
    return { torch::from_blob(buffer, shape, torch::kFloat32).clone(), geometry };
  }
  else if constexpr (std::is_same_v<Pixel, double>)
  {
    return { torch::from_blob(buffer, shape, torch::kFloat64).to(torch::kFloat32), geometry };
  }
  else
  {
    std::vector<float> values(buffer, buffer + region.GetNumberOfPixels());
    return { torch::from_blob(values.data(), shape, torch::kFloat32).clone(), geometry };
  }
}

template <typename TFixedImage, typename TMovingImage>
void
ImpactSemanticMetric<TFixedImage, TMovingImage>::Initialize()
{
  this->Superclass::Initialize();
  if (!m_ModelCache)
  {
    itkExceptionMacro("IMPACT: no model cache set; SetModelCache() must be called before Initialize()");
  }
  m_Engine.reset(); // free the previous level's feature maps first
  m_ReportedSampleLimit = false;
  auto [fixed, fixedGeometry] = ImageToTensor(*this->GetFixedImage());
  auto [moving, movingGeometry] = ImageToTensor(*this->GetMovingImage());
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
    itkExceptionMacro("IMPACT: " << e.what());
  }
}

template <typename TFixedImage, typename TMovingImage>
void
ImpactSemanticMetric<TFixedImage, TMovingImage>::UpdateMovingFeatures(const ParameterVector & theta)
{
  this->SetTransformParameters(theta);
  const auto mapping = [this](const torch::Tensor & points) {
    const auto in = points.to(torch::kFloat64).contiguous();
    auto       out = torch::empty_like(in);
    const auto p = in.template data_ptr<double>();
    const auto q = out.template data_ptr<double>();
    // TransformPoint is const and thread-safe; the grid has millions of points.
    at::parallel_for(0, in.size(0), 4096, [&](int64_t begin, int64_t end) {
      FixedPoint x;
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
    itkExceptionMacro("IMPACT: " << e.what());
  }
}

template <typename TFixedImage, typename TMovingImage>
auto
ImpactSemanticMetric<TFixedImage, TMovingImage>::CollectSamples(const ParameterVector & theta) const
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
    const FixedPoint  x = sample.m_ImageCoordinates;
    const MovingPoint y = this->TransformPoint(x);
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
    std::vector<FixedPoint> kept;
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
ImpactSemanticMetric<TFixedImage, TMovingImage>::GetValue(const ParameterVector & theta) const -> MetricValue
{
  const auto samples = CollectSamples(theta);
  try
  {
    return m_Engine->evaluate(samples.fixed, samples.moving, false).value;
  }
  catch (const std::exception & e)
  {
    itkExceptionMacro(<< e.what());
  }
}

template <typename TFixedImage, typename TMovingImage>
void
ImpactSemanticMetric<TFixedImage, TMovingImage>::GetValueAndDerivative(const ParameterVector & theta,
                                                                           MetricValue &          value,
                                                                           MetricDerivative &       derivative) const
{
  const auto             samples = CollectSamples(theta);
  impact::Engine::Result result;
  try
  {
    result = m_Engine->evaluate(samples.fixed, samples.moving, true);
  }
  catch (const std::exception & e)
  {
    itkExceptionMacro(<< e.what());
  }
  value = result.value;
  // eq. 8/10: dS/dtheta = sum_i dS/dy_i . dT(x_i)/dtheta, over the sparse Jacobian of each point.
  derivative.SetSize(this->GetNumberOfParameters());
  derivative.Fill(0.0);
  const auto                 g = result.gradient.contiguous();
  const double *             gi = g.template data_ptr<double>();
  MetricDerivative             imageJacobian(this->m_AdvancedTransform->GetNumberOfNonZeroJacobianIndices());
  JacobianIndices nzji(imageJacobian.GetSize());
  SpatialGradient    gradient;
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

} // end namespace itk
