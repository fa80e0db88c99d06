# Toolchain: aarch64-linux-gnu with Debian 12's cross compiler (crossbuild-essential-*) and multiarch libraries.
# Libraries compiled for the target come from /usr/lib/aarch64-linux-gnu (e.g. libssl-dev:<arch>);
# header-only dependencies are shared in /usr/include. No sysroot: Debian multiarch needs none.
# Tests run through qemu-user (ctest and Catch2's test discovery use the emulator). See docs/porting.md.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(FLEETPIPE_CROSS_TRIPLET aarch64-linux-gnu)
include(${CMAKE_CURRENT_LIST_DIR}/debian-multiarch.cmake)
