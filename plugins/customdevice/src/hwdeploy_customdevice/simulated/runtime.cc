// Simulated accelerator runtime for Paddle's CustomDevice plugin interface.
//
// "Device" memory is host memory and every stream operation is synchronous:
// enough for Paddle to load the plugin, place tensors on "<type>:<id>", run the
// kernels registered in kernels.cc there and fall back to CPU for the rest.
// The device type and the vendor's visible-devices variable are fixed at build
// time (SIMDEV_TYPE, SIMDEV_VISIBLE_ENV), so one source stands in for any vendor.
//
// Environment, read once when Paddle loads the plugin:
//   SIMDEV_DEVICE_COUNT        physical devices to simulate (default 1, max 16)
//   SIMDEV_VISIBLE_ENV's name  e.g. ASCEND_RT_VISIBLE_DEVICES, MLU_VISIBLE_DEVICES,
//                              TOPS_VISIBLE_DEVICES: comma-separated physical ids, as
//                              the real runtimes honour them ("" hides every device)
//   SIMDEV_MEMORY_MB           reported memory per device (default 8192)

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "paddle/phi/backends/device_ext.h"
#include "simdevice.h"

// Paddle only needs distinct non-null handles; they must be complete types at
// global scope (not in an anonymous namespace) for the header's typedefs.
struct C_Stream_st {
  int id;
};
struct C_Event_st {
  int id;
};

namespace {

std::vector<int>& VisibleDevices() {
  static std::vector<int> devices = [] {
    int physical = 1;
    if (const char* count = std::getenv("SIMDEV_DEVICE_COUNT")) {
      physical = std::atoi(count);
      if (physical < 0) physical = 0;
      if (physical > 16) physical = 16;
    }
    std::vector<int> out;
    const char* visible = std::getenv(SIMDEV_VISIBLE_ENV);
    if (visible == nullptr) {
      for (int i = 0; i < physical; ++i) out.push_back(i);
      return out;
    }
    std::string list(visible);
    size_t start = 0;
    while (start <= list.size()) {
      size_t comma = list.find(',', start);
      std::string item = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      char* end = nullptr;
      long id = std::strtol(item.c_str(), &end, 10);
      // The real runtimes stop at the first invalid entry.
      if (item.empty() || *end != '\0' || id < 0 || id >= physical) break;
      out.push_back(static_cast<int>(id));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    return out;
  }();
  return devices;
}

size_t MemoryBytes() {
  size_t mb = 8192;
  if (const char* value = std::getenv("SIMDEV_MEMORY_MB")) mb = std::strtoul(value, nullptr, 10);
  return mb << 20;
}

C_Status Ok() { return C_SUCCESS; }
C_Status OkDevice(const C_Device) { return C_SUCCESS; }

C_Status GetDevice(const C_Device device) {
  device->id = 0;
  return C_SUCCESS;
}

C_Status CreateStream(const C_Device, C_Stream* stream) {
  *stream = new C_Stream_st{0};
  return C_SUCCESS;
}
C_Status DestroyStream(const C_Device, C_Stream stream) {
  delete stream;
  return C_SUCCESS;
}
C_Status QueryStream(const C_Device, C_Stream) { return C_SUCCESS; }
C_Status AddCallback(const C_Device device, C_Stream stream, C_Callback callback, void* user_data) {
  C_Status status = C_SUCCESS;
  callback(device, stream, user_data, &status);  // everything is synchronous: run it now
  return status;
}
C_Status CreateEvent(const C_Device, C_Event* event) {
  *event = new C_Event_st{0};
  return C_SUCCESS;
}
C_Status DestroyEvent(const C_Device, C_Event event) {
  delete event;
  return C_SUCCESS;
}
C_Status RecordEvent(const C_Device, C_Stream, C_Event) { return C_SUCCESS; }
C_Status QueryEvent(const C_Device, C_Event) { return C_SUCCESS; }
C_Status SyncStream(const C_Device, C_Stream) { return C_SUCCESS; }
C_Status SyncEvent(const C_Device, C_Event) { return C_SUCCESS; }
C_Status StreamWaitEvent(const C_Device, C_Stream, C_Event) { return C_SUCCESS; }

C_Status Allocate(const C_Device, void** ptr, size_t size) {
  *ptr = std::malloc(size ? size : 1);
  return *ptr ? C_SUCCESS : C_FAILED;
}
C_Status Deallocate(const C_Device, void* ptr, size_t) {
  std::free(ptr);
  return C_SUCCESS;
}
C_Status MemorySet(const C_Device, void* ptr, unsigned char value, size_t size) {
  std::memset(ptr, value, size);
  return C_SUCCESS;
}
C_Status Copy(const C_Device, void* dst, const void* src, size_t size) {
  if (size) std::memcpy(dst, src, size);
  return C_SUCCESS;
}
C_Status CopyP2P(const C_Device, const C_Device, void* dst, const void* src, size_t size) {
  if (size) std::memcpy(dst, src, size);
  return C_SUCCESS;
}
C_Status AsyncCopy(const C_Device, C_Stream, void* dst, const void* src, size_t size) {
  if (size) std::memcpy(dst, src, size);
  return C_SUCCESS;
}
C_Status AsyncCopyP2P(const C_Device, const C_Device, C_Stream, void* dst, const void* src, size_t size) {
  if (size) std::memcpy(dst, src, size);
  return C_SUCCESS;
}

C_Status DeviceCount(size_t* count) {
  *count = VisibleDevices().size();
  return C_SUCCESS;
}
C_Status DeviceList(size_t* devices) {
  for (size_t i = 0; i < VisibleDevices().size(); ++i) devices[i] = i;
  return C_SUCCESS;
}
C_Status MemoryStats(const C_Device, size_t* total, size_t* free_memory) {
  *total = MemoryBytes();
  *free_memory = MemoryBytes();
  return C_SUCCESS;
}
C_Status MinChunkSize(const C_Device, size_t* size) {
  *size = 512;
  return C_SUCCESS;
}
C_Status Version(const C_Device, size_t* version) {
  *version = SIMDEV_VERSION_NUMBER;
  return C_SUCCESS;
}

}  // namespace

extern "C" void InitPlugin(CustomRuntimeParams* params) {
  PADDLE_CUSTOM_RUNTIME_CHECK_VERSION(params);
  params->device_type = const_cast<char*>(SIMDEV_TYPE);
  params->sub_device_type = const_cast<char*>("simulated");

  C_DeviceInterface* api = params->interface;  // zero-filled by Paddle: unset hooks stay null
  api->initialize = Ok;
  api->finalize = Ok;
  api->init_device = OkDevice;
  api->set_device = OkDevice;
  api->get_device = GetDevice;
  api->deinit_device = OkDevice;
  api->create_stream = CreateStream;
  api->destroy_stream = DestroyStream;
  api->query_stream = QueryStream;
  api->stream_add_callback = AddCallback;
  api->create_event = CreateEvent;
  api->record_event = RecordEvent;
  api->destroy_event = DestroyEvent;
  api->query_event = QueryEvent;
  api->synchronize_device = OkDevice;
  api->synchronize_stream = SyncStream;
  api->synchronize_event = SyncEvent;
  api->stream_wait_event = StreamWaitEvent;
  api->device_memory_allocate = Allocate;
  api->device_memory_deallocate = Deallocate;
  api->device_memory_set = MemorySet;
  api->host_memory_allocate = Allocate;
  api->host_memory_deallocate = Deallocate;
  api->memory_copy_h2d = Copy;
  api->memory_copy_d2h = Copy;
  api->memory_copy_d2d = Copy;
  api->memory_copy_p2p = CopyP2P;
  api->async_memory_copy_h2d = AsyncCopy;
  api->async_memory_copy_d2h = AsyncCopy;
  api->async_memory_copy_d2d = AsyncCopy;
  api->async_memory_copy_p2p = AsyncCopyP2P;
  api->get_device_count = DeviceCount;
  api->get_device_list = DeviceList;
  api->device_memory_stats = MemoryStats;
  api->device_min_chunk_size = MinChunkSize;
  api->get_runtime_version = Version;
  api->get_driver_version = Version;
}
