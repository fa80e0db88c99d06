# Toolchain: arm-linux-gnueabihf with Debian 12's cross compiler (crossbuild-essential-*) and multiarch libraries.
# Libraries compiled for the target come from /usr/lib/arm-linux-gnueabihf (e.g. libssl-dev:<arch>);
# header-only dependencies are shared in /usr/include. No sysroot: Debian multiarch needs none.
# Tests run through qemu-user (ctest and Catch2's test discovery use the emulator). See docs/porting.md.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_LIBRARY_ARCHITECTURE arm-linux-gnueabihf)
set(FLEETPIPE_CROSS_TRIPLET arm-linux-gnueabihf)
include(${CMAKE_CURRENT_LIST_DIR}/debian-multiarch.cmake)
