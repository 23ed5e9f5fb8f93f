import Foundation
import Testing

/// The probes behind a real NAT: network namespaces and iptables, as root.
@Suite("probes behind NAT (network namespaces)", .serialized, .enabled(if: NATLab.available, "needs root and iproute2"))
struct NATProbeTests {
    @Test("plain MASQUERADE: endpoint-independent mapping, address-and-port-dependent filtering; coturn's natdiscovery agrees")
    func masquerade() throws {
        let lab = try NATLab(.masquerade)
        defer { lab.teardown() }
        try lab.startSignal()
        let reports = try lab.probe(lab.home, ["stun", "--server", "\(NATLab.publicIP):3478"])
        let stun = reports["stun"]
        #expect(stun?["outcome"] as? String == "passed", "\(String(describing: stun))")
        #expect(fact(stun, "mapped_address")?.hasPrefix("\(NATLab.routerWAN):") == true, "\(String(describing: stun))")
        #expect(fact(stun, "behind_nat") == "yes")
        #expect(fact(stun, "mapping") == "endpoint-independent", "\(String(describing: stun))")
        #expect(fact(stun, "filtering") == "address-and-port-dependent", "\(String(describing: stun))")
        #expect(fact(stun, "verdict") == "port_forward")
        let coturn = try lab.run(lab.home, ["turnutils_natdiscovery", "-m", "-f", "-P", "-p", "3478", NATLab.publicIP], timeout: 60)
        #expect(coturn.text.contains("NAT with Endpoint Independent Mapping"), "\(coturn.text)")
        #expect(coturn.text.contains("NAT with Address and Port Dependent Filtering"), "\(coturn.text)")
    }

    @Test("MASQUERADE --random-fully: address-and-port-dependent mapping, a relay verdict; coturn's natdiscovery agrees")
    func randomFully() throws {
        let lab = try NATLab(.randomFully)
        defer { lab.teardown() }
        try lab.startSignal()
        let stun = try lab.probe(lab.home, ["stun", "--server", "\(NATLab.publicIP):3478"])["stun"]
        #expect(fact(stun, "mapping") == "address-and-port-dependent", "\(String(describing: stun))")
        #expect(fact(stun, "verdict") == "relay")
        let coturn = try lab.run(lab.home, ["turnutils_natdiscovery", "-m", "-P", "-p", "3478", NATLab.publicIP], timeout: 60)
        #expect(coturn.text.contains("NAT with Address and Port Dependent Mapping"), "\(coturn.text)")
    }

    @Test("our probe against coturn's turnserver (two addresses) classifies like coturn's own tool")
    func againstCoturn() throws {
        let lab = try NATLab(.masquerade)
        defer { lab.teardown() }
        let empty = lab.folder.appending(path: "empty.conf")
        FileManager.default.createFile(atPath: empty.path(), contents: Data())
        try lab.spawn(lab.pub, name: "turnserver", [
            "turnserver", "-c", empty.path(), "--listening-ip", NATLab.publicIP, "--listening-ip", NATLab.publicIP2,
            "--listening-port", "3478", "--alt-listening-port", "3479", "--stun-only", "--no-auth", "--no-tls", "--no-dtls", "--no-cli",
            "--db", lab.folder.appending(path: "turn.db").path(), "--log-file", lab.folder.appending(path: "turn.log").path(), "--simple-log",
        ])
        try lab.waitListening(lab.pub, port: 3479, udp: true)
        let stun = try lab.probe(lab.home, ["stun", "--server", "\(NATLab.publicIP):3478"])["stun"]
        let coturn = try lab.run(lab.home, ["turnutils_natdiscovery", "-m", "-f", "-p", "3478", NATLab.publicIP], timeout: 60)
        #expect(fact(stun, "other_address") == "\(NATLab.publicIP2):3479", "\(String(describing: stun))")
        #expect(coturn.text.contains("NAT with Endpoint Independent Mapping") && fact(stun, "mapping") == "endpoint-independent", "\(coturn.text)")
        #expect(coturn.text.contains("NAT with Address and Port Dependent Filtering") && fact(stun, "filtering") == "address-and-port-dependent", "\(coturn.text)")
    }

    @Test("mapping lifetime: with the router's UDP conntrack timeout at 3 s, the probe measures ≥ 2 s, < 4 s")
    func mappingLifetime() throws {
        let lab = try NATLab(.masquerade)
        defer { lab.teardown() }
        try lab.startSignal()
        try lab.exec(lab.router, ["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_udp_timeout=3", "net.netfilter.nf_conntrack_udp_timeout_stream=3"])
        let stun = try lab.probe(lab.home, ["stun", "--server", "\(NATLab.publicIP):3478", "--lifetime", "8s"])["stun"]
        #expect(fact(stun, "mapping_lifetime") == "≥ 2 s, < 4 s", "\(String(describing: stun))")
    }
}
