// Package kube runs a real Kubernetes control plane for end-to-end tests:
// etcd and kube-apiserver, built from the Go module proxy by `make
// k8s-tools` into .cache/bin (tools/k8s), on free 127.0.0.1 ports.
//
//	k := kube.StartKube(t, kube.Options{})
//	k.Namespace(t, "shop")
//	k.ServiceAccount(t, "shop", "web")
//	k.Node(t, "node-a")
//	pod := k.Pod(t, "shop", "web-0", "web", "node-a")
//	token := k.TokenRequest(t, "shop", "web", []string{"lanyard"}, pod, 10*time.Minute)
//
// StartKube gives each control plane its own etcd (temp data dir) and API
// server with a generated serving certificate (Kube.CAFile), a generated
// service-account signing key (Kube.Resign signs with it), the issuer
// Kube.Issuer (https://127.0.0.1:<port>) with OIDC discovery open to
// unauthenticated clients, a static admin token, RBAC authorization and an
// admin clientset and kubeconfig. There is no kubelet, scheduler or
// controller manager: pods are created already bound to a node
// (spec.nodeName) and stay Pending, which is enough for TokenRequest bound
// to a pod (the token then carries the node claim), TokenReview, and
// informers. Service accounts must be created explicitly.
//
// Both processes run in their own process groups and are stopped when the
// test ends (SIGTERM, then SIGKILL; on Linux the kernel kills them if the
// test binary dies first). Their output is logged when the test fails. A
// missing binary fails the test with the make target to run; nothing is
// ever skipped.
package kube
