import Foundation
import Testing

/// Masters behind a real NAT: the reach probe, what peers learn, and who dials whom.
@Suite("masters behind NAT (network namespaces)", .serialized, .enabled(if: NATLab.available, "needs root and iproute2"))
struct NATMasterTests {
    func reachability(_ value: [String: Any]?) -> String? {
        (value?["reachability"] as? [String: Any])?["dialable"] as? String
    }

    @Test("no port forward: the probe says so, the peer learns it, stops dialling, and the mesh still forms (the home master dials out)")
    func notDialable() throws {
        let lab = try NATLab(.masquerade)
        defer { lab.teardown() }
        try lab.startSignal()
        try lab.makeCertificates(["home", "cloud"])
        try lab.startMaster("cloud", in: lab.pub, listen: "\(NATLab.publicIP):50051")
        try lab.startMaster("home", in: lab.home, listen: "0.0.0.0:50051")

        // The home master's own probes: not reachable, with the fix in its log.
        let home = try lab.waitStatus(lab.home, within: 40, "the home master's reach probe") { reachability(local($0)) == "no" }
        let probes = local(home)?["probes"] as? [[String: Any]] ?? []
        let reach = probes.first { $0["probe"] as? String == "reach" }
        #expect(reach?["outcome"] as? String == "failed", "\(probes)")
        #expect((reach?["summary"] as? String)?.contains("not reachable from outside at \(NATLab.routerWAN)") == true, "\(probes)")
        let stun = probes.first { $0["probe"] as? String == "stun" }
        #expect(fact(stun, "mapping") == "endpoint-independent", "\(probes)")
        #expect(lab.log("home").contains("not reachable from outside"), "the warning with the fix")
        #expect(lab.log("home").contains("docs/nat.md"))

        // The cloud master learns it through peer exchange, and the two are linked (the home master dialled).
        let cloud = try lab.waitStatus(lab.pub, within: 20, "the cloud master hearing home's reachability") { status in
            reachability(peer(status, "home")) == "no" && peer(status, "home")?["state"] as? String == "connected"
        }
        #expect(peer(cloud, "home")?["direction"] as? String == "inbound", "the home master dialled out: \(String(describing: peer(cloud, "home")))")

        // The home master goes away: the cloud master does not waste dials on it.
        lab.kill("home")
        let gone = try lab.waitStatus(lab.pub, within: 15, "the cloud master noticing home is gone") { peer($0, "home")?["state"] as? String != "connected" }
        let failuresBefore = peer(gone, "home")?["failures"] as? Int ?? -1
        Thread.sleep(forTimeInterval: 6)
        let later = try lab.status(lab.pub)
        #expect(peer(later, "home")?["failures"] as? Int == failuresBefore, "the cloud master kept dialling an undialable peer: \(String(describing: peer(later, "home")))")
        #expect((peer(later, "home")?["last_error"] as? String)?.contains("not dialable from outside") == true, "\(String(describing: peer(later, "home")))")
    }

    @Test("a port forward (DNAT) makes the reach probe say reachable, and peers learn that")
    func portForward() throws {
        let lab = try NATLab(.masquerade)
        defer { lab.teardown() }
        try lab.forward(tcp: 50051)
        try lab.startSignal()
        try lab.makeCertificates(["home", "cloud"])
        try lab.startMaster("cloud", in: lab.pub, listen: "\(NATLab.publicIP):50051")
        try lab.startMaster("home", in: lab.home, listen: "0.0.0.0:50051", extra: "")
        let home = try lab.waitStatus(lab.home, within: 40, "the home master's reach probe") { reachability(local($0)) != nil && reachability(local($0)) != "unknown" }
        #expect(reachability(local(home)) == "yes", "\(String(describing: local(home)?["probes"]))")
        _ = try lab.waitStatus(lab.pub, within: 20, "the cloud master hearing home is dialable") { reachability(peer($0, "home")) == "yes" }
        // The one-shot command says the same (after the server's per-node interval).
        Thread.sleep(forTimeInterval: 1.2)
        let reports = try lab.probe(lab.home, ["reach", "--config", lab.folder.appending(path: "home.yml").path()])
        #expect(reports["reach"]?["outcome"] as? String == "passed", "\(String(describing: reports["reach"]))")
        #expect(fact(reports["reach"], "reachable") == "yes")
    }
}
