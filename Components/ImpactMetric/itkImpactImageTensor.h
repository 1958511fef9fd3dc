// impact-elastix: ITK images <-> the tensors and geometries of core/ (the one place that knows both).
#pragma once

#include "core/ImageTensor.h"

#include "itkVectorImage.h"

#include <type_traits>
#include <utility>

namespace impact
{

/** The physical geometry of an ITK image's buffered region. */
template <typename TImage>
Geometry
geometryOf(const TImage & image)
{
  constexpr unsigned int     D = TImage::ImageDimension;
  const auto                 region = image.GetBufferedRegion();
  Geometry                   geometry;
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

/** A scalar ITK image as a (*spatial) float32 tensor (a copy; tensor order z, y, x) and its geometry. */
template <typename TImage>
std::pair<torch::Tensor, Geometry>
imageToTensor(const TImage & image)
{
  const auto geometry = geometryOf(image);
  using Pixel = typename TImage::PixelType;
  const auto shape = tensorShape(geometry);
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
    std::vector<float> values(buffer, buffer + image.GetBufferedRegion().GetNumberOfPixels());
    return { torch::from_blob(values.data(), shape, torch::kFloat32).clone(), geometry };
  }
}

/** A (*spatial) or (*spatial, C) tensor on `geometry` as an ITK vector image of C float components. */
template <unsigned int D>
typename itk::VectorImage<float, D>::Pointer
tensorToVectorImage(const Geometry & geometry, const torch::Tensor & values)
{
  using VectorImage = itk::VectorImage<float, D>;
  typename VectorImage::SizeType      size;
  typename VectorImage::SpacingType   spacing;
  typename VectorImage::PointType     origin;
  typename VectorImage::DirectionType direction;
  for (unsigned int a = 0; a < D; ++a)
  {
    size[a] = geometry.size[a];
    spacing[a] = geometry.spacing[a];
    origin[a] = geometry.origin[a];
    for (unsigned int b = 0; b < D; ++b)
    {
      direction[a][b] = geometry.direction[a * D + b];
    }
  }
  auto image = VectorImage::New();
  image->SetRegions(size);
  image->SetSpacing(spacing);
  image->SetOrigin(origin);
  image->SetDirection(direction);
  image->SetNumberOfComponentsPerPixel(values.dim() > static_cast<int64_t>(D) ? values.size(-1) : 1);
  image->Allocate();
  const auto data = values.to(torch::kFloat32).contiguous();
  std::copy_n(data.data_ptr<float>(), data.numel(), image->GetBufferPointer());
  return image;
}

} // namespace impact
