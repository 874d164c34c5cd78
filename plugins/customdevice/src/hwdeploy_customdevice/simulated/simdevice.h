// Shared definitions of the simulated CustomDevice.
#pragma once

// Set by CMakeLists.txt: the device type token (npu, mlu, gcu...) and its
// vendor's visible-devices environment variable (ASCEND_RT_VISIBLE_DEVICES...).
#ifndef SIMDEV_BACKEND
#error "build with -DSIMDEV_BACKEND=<type>: see CMakeLists.txt"
#endif
#ifndef SIMDEV_VISIBLE_ENV
#error "build with -DSIMDEV_VISIBLE_ENV=\"...\": see CMakeLists.txt"
#endif

#define SIMDEV_STR_(x) #x
#define SIMDEV_STR(x) SIMDEV_STR_(x)
#define SIMDEV_TYPE SIMDEV_STR(SIMDEV_BACKEND)

// Reported as runtime and driver version (major*1000 + minor).
#define SIMDEV_VERSION_NUMBER 1000

namespace simdevice {
// Record that kernel `name` ran on the simulated device. With SIMDEV_TRACE set
// to a file path (appended) or to "stderr", one line per kernel execution:
//   simdevice <type> <kernel> <dtype>
void Trace(const char* name, const char* dtype);
}  // namespace simdevice
