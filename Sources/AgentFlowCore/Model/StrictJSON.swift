import Foundation

/// Reads a JSON object field by field, strictly: wrong types, out-of-range
/// values and unknown fields are refused with the field's path named
/// (`endpoints[1].port: expected an integer from 1 to 65535`). Swift's
/// `Decodable` ignores unknown keys and reports paths as coding keys; a public
/// endpoint wants both strict and readable.
public struct StrictJSONObject {
    public let path: String
    private let object: [String: Any]
    private var read: Set<String> = []

    /// Parses `bytes` as one JSON object.
    public static func parse(_ bytes: some Collection<UInt8>) throws(JSONBodyError) -> StrictJSONObject {
        guard !bytes.isEmpty else { throw JSONBodyError(code: "invalid_json", "the request body is empty; send a JSON object") }
        let value: Any
        do {
            value = try JSONSerialization.jsonObject(with: Data(bytes), options: [])
        } catch {
            throw JSONBodyError(code: "invalid_json", "the request body is not valid JSON")
        }
        guard let object = value as? [String: Any] else {
            throw JSONBodyError(code: "invalid_json", "the request body must be a JSON object")
        }
        if let duplicate = JSONDuplicateKeys.firstDuplicate(in: Array(bytes)) {
            throw .field(duplicate, "this key appears twice in one object; send it once")
        }
        return StrictJSONObject(path: "", object: object)
    }

    private init(path: String, object: [String: Any]) {
        self.path = path
        self.object = object
    }

    private func fieldPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }
    func fieldPathOf(_ key: String) -> String { fieldPath(key) }

    /// The field's value; nil when absent. `null` is refused rather than read as absent:
    /// the schemas say "string" (or "omit it"), and a client sending null has a bug to hear about.
    private mutating func raw(_ key: String) throws(JSONBodyError) -> Any? {
        read.insert(key)
        guard let value = object[key] else { return nil }
        if value is NSNull { throw .field(fieldPath(key), "null is not allowed; omit the field instead") }
        return value
    }
    mutating func rawValue(_ key: String) throws(JSONBodyError) -> Any? { try raw(key) }

    /// A string of at most `maxLength` Unicode scalars: what JSON Schema's `maxLength`
    /// counts, so a documented limit and the server's agree for any text.
    public mutating func string(_ key: String, maxLength: Int, required: Bool = true) throws(JSONBodyError) -> String? {
        guard let value = try raw(key) else {
            if required { throw .field( fieldPath(key), "required") }
            return nil
        }
        guard let text = value as? String else { throw .field( fieldPath(key), "expected a string") }
        guard text.unicodeScalars.count <= maxLength else { throw .field( fieldPath(key), "longer than \(maxLength) characters") }
        return text
    }

    public mutating func integer(_ key: String, in range: ClosedRange<Int>) throws(JSONBodyError) -> Int {
        try integer(key, in: range, required: true)!
    }

    public mutating func integer(_ key: String, in range: ClosedRange<Int>, required: Bool) throws(JSONBodyError) -> Int? {
        guard let value = try raw(key) else {
            if required { throw .field(fieldPath(key), "required") }
            return nil
        }
        guard let number = value as? NSNumber, !Self.isBoolean(number), let exact = Int(exactly: number.doubleValue) else {
            throw .field(fieldPath(key), "expected an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        guard range.contains(exact) else {
            throw .field(fieldPath(key), "\(exact) is out of range; expected \(range.lowerBound) to \(range.upperBound)")
        }
        return exact
    }

    public mutating func objects(_ key: String, maxCount: Int) throws(JSONBodyError) -> [StrictJSONObject] {
        guard let value = try raw(key) else { return [] }
        guard let array = value as? [Any] else { throw .field( fieldPath(key), "expected an array of objects") }
        guard array.count <= maxCount else { throw .field( fieldPath(key), "at most \(maxCount) entries allowed") }
        var result: [StrictJSONObject] = []
        for (index, element) in array.enumerated() {
            guard let object = element as? [String: Any] else { throw .field( "\(fieldPath(key))[\(index)]", "expected an object") }
            result.append(StrictJSONObject(path: "\(fieldPath(key))[\(index)]", object: object))
        }
        return result
    }

    public mutating func stringMap(_ key: String, maxCount: Int, maxEntryBytes: Int) throws(JSONBodyError) -> [String: String] {
        guard let value = try raw(key) else { return [:] }
        guard let dictionary = value as? [String: Any] else { throw .field( fieldPath(key), "expected an object of strings") }
        guard dictionary.count <= maxCount else { throw .field( fieldPath(key), "at most \(maxCount) entries allowed") }
        var result: [String: String] = [:]
        for (entryKey, entryValue) in dictionary {
            guard let text = entryValue as? String else { throw .field( "\(fieldPath(key)).\(entryKey)", "expected a string") }
            guard entryKey.utf8.count + text.utf8.count <= maxEntryBytes else {
                throw .field( "\(fieldPath(key)).\(entryKey)", "key and value together exceed \(maxEntryBytes) bytes")
            }
            result[entryKey] = text
        }
        return result
    }

    /// Refuses fields nobody read.
    public func finish() throws(JSONBodyError) {
        if let unknown = object.keys.sorted().first(where: { !read.contains($0) }) {
            throw .field( fieldPath(unknown), "unknown field; allowed: \(read.sorted().joined(separator: ", "))")
        }
    }

    /// JSON `true`/`false` arrive as NSNumbers of ObjC type `c` (char); JSON numbers never do.
    private static func isBoolean(_ number: NSNumber) -> Bool {
        String(cString: number.objCType) == "c"
    }
    static func isBooleanValue(_ number: NSNumber) -> Bool { isBoolean(number) }
}

/// A request body refused by `StrictJSONObject`: `invalid_json` (not a JSON
/// object) or `invalid_field` (a message that starts with the field's path).
public struct JSONBodyError: AgentFlowError {
    public let code: String
    public let message: String

    public init(code: String, _ message: String) {
        self.code = code
        self.message = message
    }

    public static func field(_ path: String, _ problem: String) -> JSONBodyError {
        JSONBodyError(code: "invalid_field", "\(path): \(problem)")
    }
}

extension StrictJSONObject {
    /// A number (integer or not) within `range`.
    public mutating func double(_ key: String, in range: ClosedRange<Double>, required: Bool = true) throws(JSONBodyError) -> Double? {
        guard let value = try rawValue(key) else {
            if required { throw .field(fieldPathOf(key), "required") }
            return nil
        }
        guard let number = value as? NSNumber, !Self.isBooleanValue(number), number.doubleValue.isFinite, range.contains(number.doubleValue) else {
            throw .field(fieldPathOf(key), "expected a number from \(range.lowerBound) to \(range.upperBound)")
        }
        return number.doubleValue
    }

    public mutating func bool(_ key: String, required: Bool = true) throws(JSONBodyError) -> Bool? {
        guard let value = try rawValue(key) else {
            if required { throw .field(fieldPathOf(key), "required") }
            return nil
        }
        guard let number = value as? NSNumber, Self.isBooleanValue(number) else { throw .field(fieldPathOf(key), "expected true or false") }
        return number.boolValue
    }

    public mutating func strings(_ key: String, maxCount: Int, maxBytes: Int) throws(JSONBodyError) -> [String] {
        guard let value = try rawValue(key) else { return [] }
        guard let array = value as? [Any] else { throw .field(fieldPathOf(key), "expected an array of strings") }
        guard array.count <= maxCount else { throw .field(fieldPathOf(key), "at most \(maxCount) entries allowed") }
        var result: [String] = []
        for (index, element) in array.enumerated() {
            guard let text = element as? String else { throw .field("\(fieldPathOf(key))[\(index)]", "expected a string") }
            guard text.utf8.count <= maxBytes else { throw .field("\(fieldPathOf(key))[\(index)]", "longer than \(maxBytes) bytes") }
            result.append(text)
        }
        return result
    }
}
