/// Everything that can be wrong with a safetensors file or request, each naming the tensor and the
/// problem. Reading never crashes or hangs on a bad file; it throws one of these.
public enum SafetensorsError: Error, Equatable, CustomStringConvertible, Sendable {
    case unreadable(path: String, reason: String)
    case unwritable(path: String, reason: String)
    case truncated(fileSize: Int)
    case headerLengthOutOfBounds(length: UInt64, fileSize: Int)
    case headerNotUTF8
    case malformedHeader(offset: Int, reason: String)
    case headerNotAnObject
    case invalidMetadata(reason: String)
    case invalidEntry(tensor: String, reason: String)
    case unsupportedDType(tensor: String, dtype: String)
    case invalidShape(tensor: String, reason: String)
    case sizeMismatch(tensor: String, dtype: String, shape: [Int], expectedBytes: Int, storedBytes: Int)
    case offsetsOutOfRange(tensor: String, begin: Int, end: Int, dataSize: Int)
    case overlappingTensors(first: String, second: String)
    case unreferencedBytes(begin: Int, end: Int)
    case tensorNotFound(name: String, closest: [String])
    case notFloatingPoint(tensor: String, dtype: String)
    case notInteger(tensor: String, dtype: String)
    case invalidName(String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "cannot read '\(path)': \(reason)"
        case let .unwritable(path, reason): return "cannot write '\(path)': \(reason)"
        case let .truncated(size): return "the file is \(size) bytes long; a safetensors file starts with an 8-byte header length"
        case let .headerLengthOutOfBounds(length, size): return "the header length \(length) does not fit the file (\(size) bytes) or exceeds the 100 MB limit"
        case .headerNotUTF8: return "the header is not valid UTF-8"
        case let .malformedHeader(offset, reason): return "the header is not valid JSON: \(reason) at byte \(offset) of the header"
        case .headerNotAnObject: return "the header is not a JSON object"
        case let .invalidMetadata(reason): return "__metadata__ is invalid: \(reason)"
        case let .invalidEntry(tensor, reason): return "tensor '\(tensor)': \(reason)"
        case let .unsupportedDType(tensor, dtype): return "tensor '\(tensor)' has unknown dtype '\(dtype)'"
        case let .invalidShape(tensor, reason): return "tensor '\(tensor)' has an invalid shape: \(reason)"
        case let .sizeMismatch(tensor, dtype, shape, expected, stored): return "tensor '\(tensor)' (\(dtype), shape \(shape)) needs \(expected) bytes but its offsets span \(stored)"
        case let .offsetsOutOfRange(tensor, begin, end, size): return "tensor '\(tensor)' has data offsets [\(begin), \(end)) outside the \(size)-byte data section"
        case let .overlappingTensors(first, second): return "tensors '\(first)' and '\(second)' overlap in the data section"
        case let .unreferencedBytes(begin, end): return "bytes [\(begin), \(end)) of the data section belong to no tensor"
        case let .tensorNotFound(name, closest): return "no tensor named '\(name)'" + (closest.isEmpty ? "" : "; closest: " + closest.map { "'\($0)'" }.joined(separator: ", "))
        case let .notFloatingPoint(tensor, dtype): return "tensor '\(tensor)' is \(dtype), not a floating-point tensor (read it with int64s(named:))"
        case let .notInteger(tensor, dtype): return "tensor '\(tensor)' is \(dtype), not an integer tensor"
        case let .invalidName(name): return "'\(name)' is not a valid tensor name (empty or reserved)"
        }
    }
}

/// Element types of the safetensors format.
public enum SafetensorsDType: String, Sendable, CaseIterable, Codable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
    case u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8", bool = "BOOL"

    public var byteSize: Int {
        switch self {
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        case .i8, .u8, .bool: return 1
        }
    }

    public var isFloatingPoint: Bool { [.f64, .f32, .f16, .bf16].contains(self) }
}
