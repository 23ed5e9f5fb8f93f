/// Finds a key that appears twice in one JSON object. `JSONSerialization`
/// keeps the last of two equal keys, so `{"node_id":"a","node_id":"b"}` would
/// be read as `b` here and perhaps as `a` by a proxy in front: a request two
/// readers understand differently. Strict bodies refuse it instead.
///
/// Runs on text that already parsed as JSON, so it only tracks structure.
enum JSONDuplicateKeys {
    private struct Frame {
        var isObject: Bool
        var keys: Set<[UInt8]> = []
        var expectingKey = true
        var currentKey = ""
        var index = 0
    }

    /// The path of the first repeated key (`endpoints[1].port`), or nil.
    static func firstDuplicate(in bytes: [UInt8]) -> String? {
        var stack: [Frame] = []
        var position = 0
        while position < bytes.count {
            let byte = bytes[position]
            switch byte {
            case UInt8(ascii: "{"):
                stack.append(Frame(isObject: true))
            case UInt8(ascii: "["):
                stack.append(Frame(isObject: false))
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                _ = stack.popLast()
            case UInt8(ascii: ","):
                if stack.last?.isObject == true { stack[stack.count - 1].expectingKey = true } else if !stack.isEmpty { stack[stack.count - 1].index += 1 }
            case UInt8(ascii: ":"):
                if !stack.isEmpty { stack[stack.count - 1].expectingKey = false }
            case UInt8(ascii: "\""):
                let (key, end) = string(bytes, from: position)
                position = end
                if var top = stack.last, top.isObject, top.expectingKey {
                    if !top.keys.insert(key).inserted {
                        return path(stack.dropLast()) + component(String(decoding: key, as: UTF8.self), isFirst: stack.count == 1)
                    }
                    top.currentKey = String(decoding: key, as: UTF8.self)
                    stack[stack.count - 1] = top
                }
                continue
            default:
                break
            }
            position += 1
        }
        return nil
    }

    private static func component(_ key: String, isFirst: Bool) -> String { isFirst ? key : ".\(key)" }

    private static func path(_ frames: ArraySlice<Frame>) -> String {
        var text = ""
        for frame in frames {
            if frame.isObject {
                text += text.isEmpty ? frame.currentKey : ".\(frame.currentKey)"
            } else {
                text += "[\(frame.index)]"
            }
        }
        return text
    }

    /// The decoded bytes of the string starting at `start` (a quote), and the index after its closing quote.
    private static func string(_ bytes: [UInt8], from start: Int) -> ([UInt8], Int) {
        var decoded: [UInt8] = []
        var position = start + 1
        while position < bytes.count {
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") { return (decoded, position + 1) }
            if byte == UInt8(ascii: "\\"), position + 1 < bytes.count {
                let escape = bytes[position + 1]
                switch escape {
                case UInt8(ascii: "u"):
                    // \uXXXX (a surrogate pair is two of them): decode to UTF-8 so "\u0041" and "A" are one key.
                    var scalarValue = hex(bytes, position + 2)
                    var consumed = 6
                    if (0xD800...0xDBFF).contains(scalarValue), position + 11 < bytes.count, bytes[position + 6] == UInt8(ascii: "\\"), bytes[position + 7] == UInt8(ascii: "u") {
                        let low = hex(bytes, position + 8)
                        scalarValue = 0x10000 + ((scalarValue - 0xD800) << 10) + (low - 0xDC00)
                        consumed = 12
                    }
                    decoded += Array(String(Unicode.Scalar(scalarValue).map(Character.init) ?? "\u{FFFD}").utf8)
                    position += consumed
                    continue
                case UInt8(ascii: "n"): decoded.append(0x0A)
                case UInt8(ascii: "t"): decoded.append(0x09)
                case UInt8(ascii: "r"): decoded.append(0x0D)
                case UInt8(ascii: "b"): decoded.append(0x08)
                case UInt8(ascii: "f"): decoded.append(0x0C)
                default: decoded.append(escape)  // \" \\ \/
                }
                position += 2
                continue
            }
            decoded.append(byte)
            position += 1
        }
        return (decoded, position)
    }

    private static func hex(_ bytes: [UInt8], _ start: Int) -> UInt32 {
        guard start + 4 <= bytes.count else { return 0xFFFD }
        var value: UInt32 = 0
        for byte in bytes[start..<(start + 4)] {
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: return 0xFFFD
            }
            value = value << 4 | digit
        }
        return value
    }
}
