#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// C functions found by name among the libraries already loaded into the process: features that
/// only some builds of a library have (OpenBLAS's dynamic dispatch and thread server, libgomp's
/// thread count), so they cannot be linked against directly.
enum LoadedSymbols {
    /// The function called `name`, as `type` (a `@convention(c)` function type), or `nil` where no
    /// loaded library defines it.
    static func function<Function>(_ name: String, as type: Function.Type) -> Function? {
        guard let process = dlopen(nil, RTLD_NOW), let address = dlsym(process, name) else { return nil }
        return unsafeBitCast(address, to: type)
    }
}
