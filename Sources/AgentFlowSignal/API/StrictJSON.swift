import Foundation
import HTTPTypes

/// Reads a JSON object field by field, strictly: wrong types, out-of-range
/// values and unknown fields are refused with the field's path named
/// (`endpoints[1].port: expected an integer from 1 to 65535`). Swift's
/// `Decodable` ignores unknown keys and reports paths as coding keys; a public
/// endpoint wants both strict and readable.
struct StrictJSONObject {
    let path: String
    private let object: [String: Any]
    private var read: Set<String> = []

    /// Parses `bytes` as one JSON object.
    static func parse(_ bytes: some Collection<UInt8>) throws(SignalAPIError) -> StrictJSONObject {
        guard !bytes.isEmpty else { throw SignalAPIError(.badRequest, "invalid_json", "the request body is empty; send a JSON object") }
        let value: Any
        do {
            value = try JSONSerialization.jsonObject(with: Data(bytes), options: [])
        } catch {
            throw SignalAPIError(.badRequest, "invalid_json", "the request body is not valid JSON")
        }
        guard let object = value as? [String: Any] else {
            throw SignalAPIError(.badRequest, "invalid_json", "the request body must be a JSON object")
        }
        return StrictJSONObject(path: "", object: object)
    }

    private init(path: String, object: [String: Any]) {
        self.path = path
        self.object = object
    }

    private func fieldPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    private mutating func raw(_ key: String) -> Any? {
        read.insert(key)
        guard let value = object[key], !(value is NSNull) else { return nil }
        return value
    }

    mutating func string(_ key: String, maxBytes: Int, required: Bool = true) throws(SignalAPIError) -> String? {
        guard let value = raw(key) else {
            if required { throw .badRequest(field: fieldPath(key), "required") }
            return nil
        }
        guard let text = value as? String else { throw .badRequest(field: fieldPath(key), "expected a string") }
        guard text.utf8.count <= maxBytes else { throw .badRequest(field: fieldPath(key), "longer than \(maxBytes) bytes") }
        return text
    }

    mutating func integer(_ key: String, in range: ClosedRange<Int>) throws(SignalAPIError) -> Int {
        guard let value = raw(key) else { throw .badRequest(field: fieldPath(key), "required") }
        guard let number = value as? NSNumber, !Self.isBoolean(number), let exact = Int(exactly: number.doubleValue) else {
            throw .badRequest(field: fieldPath(key), "expected an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        guard range.contains(exact) else {
            throw .badRequest(field: fieldPath(key), "\(exact) is out of range; expected \(range.lowerBound) to \(range.upperBound)")
        }
        return exact
    }

    mutating func objects(_ key: String, maxCount: Int) throws(SignalAPIError) -> [StrictJSONObject] {
        guard let value = raw(key) else { return [] }
        guard let array = value as? [Any] else { throw .badRequest(field: fieldPath(key), "expected an array of objects") }
        guard array.count <= maxCount else { throw .badRequest(field: fieldPath(key), "at most \(maxCount) entries allowed") }
        var result: [StrictJSONObject] = []
        for (index, element) in array.enumerated() {
            guard let object = element as? [String: Any] else { throw .badRequest(field: "\(fieldPath(key))[\(index)]", "expected an object") }
            result.append(StrictJSONObject(path: "\(fieldPath(key))[\(index)]", object: object))
        }
        return result
    }

    mutating func stringMap(_ key: String, maxCount: Int, maxEntryBytes: Int) throws(SignalAPIError) -> [String: String] {
        guard let value = raw(key) else { return [:] }
        guard let dictionary = value as? [String: Any] else { throw .badRequest(field: fieldPath(key), "expected an object of strings") }
        guard dictionary.count <= maxCount else { throw .badRequest(field: fieldPath(key), "at most \(maxCount) entries allowed") }
        var result: [String: String] = [:]
        for (entryKey, entryValue) in dictionary {
            guard let text = entryValue as? String else { throw .badRequest(field: "\(fieldPath(key)).\(entryKey)", "expected a string") }
            guard entryKey.utf8.count + text.utf8.count <= maxEntryBytes else {
                throw .badRequest(field: "\(fieldPath(key)).\(entryKey)", "key and value together exceed \(maxEntryBytes) bytes")
            }
            result[entryKey] = text
        }
        return result
    }

    /// Refuses fields nobody read.
    func finish() throws(SignalAPIError) {
        if let unknown = object.keys.sorted().first(where: { !read.contains($0) }) {
            throw .badRequest(field: fieldPath(unknown), "unknown field; allowed: \(read.sorted().joined(separator: ", "))")
        }
    }

    /// JSON `true`/`false` arrive as NSNumbers of ObjC type `c` (char); JSON numbers never do.
    private static func isBoolean(_ number: NSNumber) -> Bool {
        String(cString: number.objCType) == "c"
    }
}
