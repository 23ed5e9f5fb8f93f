public import AgentFlowProto
import AgentFlowCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Samples this host's health from /proc and statvfs: CPU (over the interval
/// since the last sample), memory, load, disk usage of configured paths,
/// network bytes (all interfaces but loopback), uptime. Linux only; a missing
/// file leaves its fields at zero rather than failing.
public struct StatusSampler: Sendable {
    public let diskPaths: [String]
    private var lastCPU: (busy: UInt64, total: UInt64)?

    public init(diskPaths: [String] = ["/"]) {
        self.diskPaths = diskPaths
    }

    public mutating func sample() -> Agentflow_Mesh_V1_NodeStatusUpdate {
        var status = Agentflow_Mesh_V1_NodeStatusUpdate()
        if let cpu = Self.cpuTimes() {
            if let last = lastCPU, cpu.total > last.total {
                status.cpuPercent = Double(cpu.busy &- last.busy) / Double(cpu.total - last.total) * 100
            }
            lastCPU = cpu
        }
        let memory = Self.keyedNumbers("/proc/meminfo")
        if let total = memory["MemTotal"], let available = memory["MemAvailable"] {
            status.memoryTotalBytes = total * 1_024
            status.memoryUsedBytes = (total - min(total, available)) * 1_024
        }
        if let load = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8).split(separator: " ").prefix(3).compactMap({ Double($0) }), load.count == 3 {
            status.load1M = load[0]
            status.load5M = load[1]
            status.load15M = load[2]
        }
        for path in diskPaths {
            var info = statvfs()
            guard statvfs(path, &info) == 0 else { continue }
            var disk = Agentflow_Mesh_V1_DiskUsage()
            disk.path = path
            disk.totalBytes = UInt64(info.f_blocks) * UInt64(info.f_frsize)
            disk.usedBytes = (UInt64(info.f_blocks) - UInt64(info.f_bfree)) * UInt64(info.f_frsize)
            status.disks.append(disk)
        }
        if let text = try? String(contentsOfFile: "/proc/net/dev", encoding: .utf8) {
            for line in text.split(separator: "\n").dropFirst(2) {
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2, parts[0].trimmingWhitespace != "lo" else { continue }
                let fields = parts[1].split(separator: " ").compactMap { UInt64($0) }
                guard fields.count >= 9 else { continue }
                status.networkRxBytes &+= fields[0]
                status.networkTxBytes &+= fields[8]
            }
        }
        if let uptime = try? String(contentsOfFile: "/proc/uptime", encoding: .utf8).split(separator: " ").first.flatMap({ Double($0) }) {
            status.uptimeSeconds = UInt64(uptime)
        }
        return status
    }

    static func cpuTimes() -> (busy: UInt64, total: UInt64)? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) else { return nil }
        let values = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        guard values.count >= 4 else { return nil }
        let total = values.reduce(0, &+)
        let idle = values[3] &+ (values.count > 4 ? values[4] : 0)  // idle + iowait
        return (total &- idle, total)
    }

    static func keyedNumbers(_ file: String) -> [String: UInt64] {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return [:] }
        var result: [String: UInt64] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, let value = parts[1].split(separator: " ").first.flatMap({ UInt64($0) }) else { continue }
            result[String(parts[0])] = value
        }
        return result
    }
}

extension Agentflow_Mesh_V1_NodeStatusUpdate {
    /// A status value by the name alert rules use: cpu_percent, memory_percent,
    /// load_1m, load_5m, load_15m, disk_percent (the fullest configured disk).
    public func metric(_ name: String) -> Double? {
        switch name {
        case "cpu_percent": return cpuPercent
        case "memory_percent": return memoryTotalBytes > 0 ? Double(memoryUsedBytes) / Double(memoryTotalBytes) * 100 : nil
        case "load_1m": return load1M
        case "load_5m": return load5M
        case "load_15m": return load15M
        case "disk_percent": return disks.compactMap { $0.totalBytes > 0 ? Double($0.usedBytes) / Double($0.totalBytes) * 100 : nil }.max()
        default: return nil
        }
    }

    public static let metricNames = ["cpu_percent", "memory_percent", "load_1m", "load_5m", "load_15m", "disk_percent"]
}
