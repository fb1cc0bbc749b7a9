package attest

import (
	"bytes"
	"fmt"
	"strings"
)

// maxCgroupFileSize bounds what is read of /proc/<pid>/cgroup.
const maxCgroupFileSize = 64 << 10

// podContainer is what a process's cgroups say about the pod and container
// it runs in.
type podContainer struct {
	PodUID      string
	ContainerID string
}

// parseCgroupFile reads the contents of /proc/<pid>/cgroup, in the cgroup
// v1 ("hierarchy-ID:controllers:path", one line per hierarchy), v2
// ("0::path") or hybrid format, and returns the pod UID and container ID
// the paths name. ok is false when no line names a pod container (a host
// process). Lines that disagree are an error: a process is in one
// container.
func parseCgroupFile(data []byte) (pc podContainer, ok bool, err error) {
	for line := range bytes.Lines(data) {
		line = bytes.TrimRight(line, "\n")
		if len(line) == 0 {
			continue
		}
		parts := strings.SplitN(string(line), ":", 3)
		if len(parts) != 3 {
			return podContainer{}, false, fmt.Errorf("malformed cgroup line %.200q", line)
		}
		cand, found := parseCgroupPath(parts[2])
		switch {
		case !found:
		case !ok:
			pc, ok = cand, true
		case cand != pc:
			return podContainer{}, false, fmt.Errorf("cgroups name more than one container (%s/%s and %s/%s)",
				pc.PodUID, pc.ContainerID, cand.PodUID, cand.ContainerID)
		}
	}
	return pc, ok, nil
}

// parseCgroupPath finds the pod UID and container ID in one cgroup path.
// The kubelet and the container runtime build these paths:
//
//	cgroupfs driver:  /kubepods/burstable/pod<uid>/<container-id>
//	                  /kubepods/pod<uid>/crio-<container-id>
//	systemd driver:   /kubepods.slice/kubepods-burstable.slice/
//	                  kubepods-burstable-pod<uid_with_underscores>.slice/
//	                  cri-containerd-<id>.scope (or crio-<id>, docker-<id>)
//	containerd, systemd driver, cgroup v1:
//	                  /kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>
//
// Paths may carry a prefix the runtime does not control: "/../.." when the
// reader is in another cgroup namespace, or a node container's cgroup
// (kind). The first segment naming a pod is taken, and the segment right
// after it must name the container: anything below is a sub-cgroup the
// container may have created itself, and so cannot be trusted to name a
// pod.
func parseCgroupPath(path string) (podContainer, bool) {
	var segs []string
	for seg := range strings.SplitSeq(path, "/") {
		if first, rest, found := strings.Cut(seg, ":"); found {
			// "<pod slice>:<runtime>:<container id>"
			segs = append(segs, first, rest[strings.LastIndexByte(rest, ':')+1:])
			continue
		}
		segs = append(segs, seg)
	}
	for i, seg := range segs {
		uid, ok := podUIDFromSegment(seg)
		if !ok {
			continue
		}
		if i+1 >= len(segs) {
			return podContainer{}, false // the pod's own cgroup
		}
		id, ok := containerIDFromSegment(segs[i+1])
		if !ok {
			return podContainer{}, false
		}
		return podContainer{PodUID: uid, ContainerID: id}, true
	}
	return podContainer{}, false
}

// uidLength is the length of a Kubernetes UID (a UUID).
const uidLength = 36

// podUIDFromSegment accepts "pod<uid>" (cgroupfs) and
// "kubepods[-<qos>]-pod<uid_with_underscores>.slice" (systemd) and returns
// the UID in its canonical dashed form.
func podUIDFromSegment(seg string) (string, bool) {
	seg = strings.TrimSuffix(seg, ".slice")
	if len(seg) < len("pod")+uidLength {
		return "", false
	}
	uid, prefix := seg[len(seg)-uidLength:], seg[:len(seg)-uidLength]
	before, found := strings.CutSuffix(prefix, "pod")
	if !found || (before != "" && !strings.HasSuffix(before, "-")) {
		return "", false
	}
	sep := uid[8]
	if sep != '-' && sep != '_' {
		return "", false
	}
	for i := 0; i < uidLength; i++ {
		c := uid[i]
		switch i {
		case 8, 13, 18, 23:
			if c != sep {
				return "", false
			}
		default:
			if !isLowerHex(c) {
				return "", false
			}
		}
	}
	return strings.ReplaceAll(uid, "_", "-"), true
}

// Container IDs of containerd, CRI-O and Docker are 64 hex digits; shorter
// and longer forms are accepted within bounds, since the ID is checked
// against the pod's container statuses anyway.
const (
	minContainerIDLength = 12
	maxContainerIDLength = 128
)

// containerIDFromSegment accepts "<id>" (cgroupfs) and
// "<runtime>-<id>[.scope]" (systemd: cri-containerd-, crio-, docker-).
// CRI-O's monitor process (crio-conmon-<id>) is not a container.
func containerIDFromSegment(seg string) (string, bool) {
	seg = strings.TrimSuffix(seg, ".scope")
	if strings.HasPrefix(seg, "crio-conmon-") {
		return "", false
	}
	id := seg[strings.LastIndexByte(seg, '-')+1:]
	if len(id) < minContainerIDLength || len(id) > maxContainerIDLength {
		return "", false
	}
	for i := 0; i < len(id); i++ {
		if !isLowerHex(id[i]) {
			return "", false
		}
	}
	return id, true
}

func isLowerHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f')
}
