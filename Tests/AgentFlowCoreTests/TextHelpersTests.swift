import AgentFlowCore
import Testing

/// The few string helpers that let the core do without full Foundation.
@Suite("Text helpers")
struct TextHelpersTests {
    @Test("paths join and split as NSString's did")
    func paths() {
        #expect(PathText.join("./data", "peer-book.json") == "./data/peer-book.json")
        #expect(PathText.join("/data/", "x") == "/data/x")
        #expect(PathText.join("/data", "/etc/x") == "/etc/x")
        #expect(PathText.join("", "x") == "x")
        #expect(PathText.parent(of: "/a/b/c.yml") == "/a/b")
        #expect(PathText.parent(of: "/a/b/") == "/a")
        #expect(PathText.parent(of: "/c.yml") == "/")
        #expect(PathText.parent(of: "c.yml") == "")
        #expect(PathText.parent(of: "./d/signal-secret") == "./d")
    }

    @Test("fixed-point numbers", arguments: [
        (3.14159, 2, "3.14"), (2.005, 1, "2.0"), (0.05, 1, "0.1"), (-1.25, 1, "-1.3"), (12.0, 0, "12"),
        (0.0001, 2, "0.00"), (-0.0001, 2, "0.00"), (99.999, 2, "100.00"), (7.5, 3, "7.500"),
    ])
    func fixed(value: Double, places: Int, text: String) {
        #expect(value.fixed(places) == text)
    }

    @Test("non-finite numbers are spelled out")
    func nonFinite() {
        #expect(Double.nan.fixed(2) == "nan")
        #expect(Double.infinity.fixed(1) == "inf")
    }

    @Test("hex bytes and trimming")
    func hexAndTrim() {
        #expect([UInt8(0), 0x0f, 0xa0, 0xff].map(\.hexByte).joined() == "000fa0ff")
        #expect("  a b \t".trimmingSpaces == "a b")
        #expect("\r\n secret \n".trimmingWhitespace == "secret")
        #expect("lo".padded(to: 4) == "lo  ")
        #expect("toolong".padded(to: 3) == "toolong")
    }
}
