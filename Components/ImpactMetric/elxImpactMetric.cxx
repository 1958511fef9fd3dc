#include "elxImpactMetric.h"

elxInstallMacro(ImpactMetric);
