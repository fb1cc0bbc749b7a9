// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 for the
// integration tests' Kubernetes control plane (the root module that carries
// etcd's own main package is not published for v3.7).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
