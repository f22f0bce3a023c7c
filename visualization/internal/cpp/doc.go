// Package cpp is the C++17 Top-K engine (topk.cc) behind a small C ABI
// (topk.h) and its cgo binding. visualization/internal/topk wraps it in the
// Go API the server uses, with a pure-Go twin for builds without cgo; this
// package is that API's engine, nothing else calls it.
//
// It is its own package because cgo compiles only the C/C++ files of the
// package that imports "C": keeping the C++ here leaves topk free of C
// toolchain concerns and makes the C ABI the one boundary between the two
// languages (cgo cannot call C++ directly in any case). Without cgo this
// package holds no Go code but this comment, and topk uses its Go twin.
//
// Concurrency: an Engine is not safe for concurrent use; the caller
// serialises every call (topk holds a mutex). Close is called once, last.
package cpp
