// Placeholder: tests in progress.
#include <gtest/gtest.h>
