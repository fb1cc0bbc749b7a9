// Package attest tells the node agent which workload is calling on its
// Unix socket. The SDS and Workload API servers both ask an Identifier:
//
//	creds := attest.NewCredentials("")                  // SO_PEERCRED on every connection
//	k8s, _ := attest.NewK8s(attest.K8sConfig{Client: c, NodeName: node})
//	go k8s.Run(ctx)
//	id, _ := attest.NewIdentifier(attest.IdentifierConfig{
//		TrustDomain: td,
//		Attestors:   []attest.Attestor{k8s, unixAttestor},
//	})
//	srv := grpc.NewServer(grpc.Creds(creds))
//	...
//	w, err := id.Identify(stream.Context())            // agent.Workload
//
// # How a caller is identified
//
// A caller that sends "authorization: Bearer <token>" metadata (Envoy's
// file-based call credentials) is the service account its projected token
// names. The token's claims are read without verifying the signature, only
// to derive the SPIFFE ID to ask for (ca.WorkloadID); the CA verifies the
// token when the agent forwards it with the CSR. Tokens are never logged.
//
// Otherwise the connection's peer is attested. Credentials read the peer's
// pid, uid and gid with SO_PEERCRED when the connection is accepted. The
// attestors run in the configured order; the first that knows the peer
// decides, and an attestor error stops the chain (a pod whose lookup failed
// must not fall through to a uid mapping):
//
//   - Unix maps uid and/or gid to a namespace and service account, for
//     development and hosts without Kubernetes. The gid is the peer's
//     effective primary group; supplementary groups are not seen.
//   - K8s reads /proc/<pid>/cgroup (v1, v2 and hybrid; cgroupfs and systemd
//     drivers; containerd, CRI-O and Docker names), takes the pod UID and
//     container ID, and finds the pod on this node in an informer that
//     watches only this node's pods (field selector spec.nodeName) and
//     indexes them by UID. The pod must be running on this node and its
//     status must list the container. The agent needs hostPID to see the
//     workloads' PIDs; a peer in a PID namespace the agent cannot see has
//     PID 0 and is left to the next attestor. Static pods are not
//     supported: their mirror pods carry another UID than the kubelet's.
//
// # PID reuse
//
// SO_PEERCRED reports the PID of the process that called connect(2). By
// the time its cgroups are read that process may have exited and the PID
// been given to another one, possibly in another pod. Credentials record
// the process's start time (/proc/<pid>/stat field 22) right after the
// connection is accepted, and the K8s attestor checks that the PID still
// has that start time both before and after it reads the cgroups, refusing
// otherwise. A PID reused within the small window between connect(2) and
// accept is not detected; SPIRE's peertracker (which also holds the
// /proc/<pid> directory open) shares this limit. The Unix attestor needs
// no PID: uid and gid are fixed at connect time.
//
// # Sidecar mode
//
// With IdentifierConfig.TokenFile set, the agent runs inside one pod and
// serves only that pod: every caller is identified by the pod's projected
// token, read from the file (re-read when Kubernetes rotates it), and any
// token a caller presents is ignored. The peer is not checked: the socket
// is in the pod (an emptyDir shared by its containers), so any process
// that can reach it is in the pod.
package attest
