// Placeholder: implementation in progress.
#include "model/layers.h"
