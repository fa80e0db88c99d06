# Finds what fleetpipe links. Used by the build and, installed, by fleetpipeConfig.cmake (a static
# fleetpipe carries its private dependencies into the consumer's link line).
include(CMakeFindDependencyMacro)
set(THREADS_PREFER_PTHREAD_FLAG ON)
find_dependency(Threads)
find_dependency(OpenSSL 3)
find_dependency(PkgConfig)
if(NOT TARGET PkgConfig::FLEETPIPE_LMDB)
  pkg_check_modules(FLEETPIPE_LMDB REQUIRED IMPORTED_TARGET GLOBAL lmdb)
endif()
if(NOT TARGET PkgConfig::FLEETPIPE_ZSTD)
  pkg_check_modules(FLEETPIPE_ZSTD REQUIRED IMPORTED_TARGET GLOBAL libzstd)
endif()
