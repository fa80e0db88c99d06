# The part the Debian multiarch toolchain files share; FLEETPIPE_CROSS_TRIPLET is set by the caller.
set(CMAKE_C_COMPILER ${FLEETPIPE_CROSS_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${FLEETPIPE_CROSS_TRIPLET}-g++)

# pkg-config must read the target's .pc files only (lmdb, libzstd, openssl).
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/${FLEETPIPE_CROSS_TRIPLET}/pkgconfig:/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")

# Libraries and CMake packages: the target's multiarch directory first (CMAKE_LIBRARY_ARCHITECTURE),
# never the build machine's; programs (ccache, python3) from the build machine.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_IGNORE_PATH /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu)

# Run target binaries (tests, Catch2's test discovery) under qemu-user. The loader and libraries
# are the multiarch ones installed on the host, which the target's ld.so finds by itself.
if(CMAKE_SYSTEM_PROCESSOR STREQUAL "aarch64")
  find_program(FLEETPIPE_QEMU qemu-aarch64-static qemu-aarch64)
else()
  find_program(FLEETPIPE_QEMU qemu-arm-static qemu-arm)
endif()
if(FLEETPIPE_QEMU)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${FLEETPIPE_QEMU})
endif()

# GCC notes on ARM that a C++ ABI change of GCC 7.1 affects std::vector's iterators; everything
# here is built with one compiler, so the note says nothing about this build.
if(CMAKE_SYSTEM_PROCESSOR STREQUAL "arm")
  string(APPEND CMAKE_CXX_FLAGS_INIT " -Wno-psabi")
endif()
