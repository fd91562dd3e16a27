// Anchor translation unit for the shared libtorch precompiled header (see CMakeLists.txt).
