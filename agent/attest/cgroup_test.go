package attest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

const (
	fixtureUID  = "2c48913c-b29f-11e7-9350-020968147796"
	fixtureUIDu = "2c48913c_b29f_11e7_9350_020968147796"
	fixtureCID  = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
	otherCID    = "aff34703e5e1f89443e9a1bffcc80f43f74d4808a2dd22c8f88c08547b323934"
)

func TestParseCgroupFile(t *testing.T) {
	want := podContainer{PodUID: fixtureUID, ContainerID: fixtureCID}
	for _, tt := range []struct {
		name    string
		file    string
		want    podContainer
		ok      bool
		wantErr string
	}{
		{
			name: "v2 systemd containerd",
			file: "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + fixtureUIDu + ".slice/cri-containerd-" + fixtureCID + ".scope\n",
			want: want, ok: true,
		},
		{
			name: "v2 systemd cri-o",
			file: "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + fixtureUIDu + ".slice/crio-" + fixtureCID + ".scope\n",
			want: want, ok: true,
		},
		{
			name: "v2 systemd guaranteed qos (no qos slice)",
			file: "0::/kubepods.slice/kubepods-pod" + fixtureUIDu + ".slice/cri-containerd-" + fixtureCID + ".scope\n",
			want: want, ok: true,
		},
		{
			name: "v2 cgroupfs containerd",
			file: "0::/kubepods/besteffort/pod" + fixtureUID + "/" + fixtureCID + "\n",
			want: want, ok: true,
		},
		{
			name: "v2 seen from another cgroup namespace",
			file: "0::/../../kubepods-besteffort-pod" + fixtureUIDu + ".slice/cri-containerd-" + fixtureCID + ".scope\n",
			want: want, ok: true,
		},
		{
			name: "v2 kind node (nested in the node container's cgroup)",
			file: "0::/system.slice/docker-" + otherCID + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + fixtureUIDu + ".slice/cri-containerd-" + fixtureCID + ".scope\n",
			want: want, ok: true,
		},
		{
			name: "v2 sub-cgroup made inside the container cannot rename the pod",
			file: "0::/kubepods/burstable/pod" + fixtureUID + "/" + fixtureCID + "/pod11111111-2222-3333-4444-555555555555/" + otherCID + "\n",
			want: want, ok: true,
		},
		{
			name: "v1 cgroupfs docker",
			file: `12:pids:/kubepods/burstable/pod` + fixtureUID + `/` + fixtureCID + `
11:hugetlb:/kubepods/burstable/pod` + fixtureUID + `/` + fixtureCID + `
10:net_prio,net_cls:/kubepods/burstable/pod` + fixtureUID + `/` + fixtureCID + `
9:perf_event:/kubepods/burstable/pod` + fixtureUID + `/` + fixtureCID + `
8:cpu,cpuacct:/kubepods/burstable/pod` + fixtureUID + `/` + fixtureCID + `
7:memory:/kubepods/burstable/pod` + fixtureUID + `/` + fixtureCID + `
6:devices:/kubepods/burstable/pod` + fixtureUID + `/` + fixtureCID + `
5:freezer:/kubepods/burstable/pod` + fixtureUID + `/` + fixtureCID + `
4:blkio:/kubepods/burstable/pod` + fixtureUID + `/` + fixtureCID + `
3:cpuset:/kubepods/burstable/pod` + fixtureUID + `/` + fixtureCID + `
2:rdma:/
1:name=systemd:/kubepods/burstable/pod` + fixtureUID + `/` + fixtureCID + `
0::/
`,
			want: want, ok: true,
		},
		{
			name: "v1 systemd docker",
			file: `11:memory:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod` + fixtureUIDu + `.slice/docker-` + fixtureCID + `.scope
10:cpu,cpuacct:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod` + fixtureUIDu + `.slice/docker-` + fixtureCID + `.scope
1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod` + fixtureUIDu + `.slice/docker-` + fixtureCID + `.scope
`,
			want: want, ok: true,
		},
		{
			name: "v1 systemd containerd (colon form)",
			file: `12:memory:/kubepods-besteffort-pod` + fixtureUIDu + `.slice:cri-containerd:` + fixtureCID + `
1:name=systemd:/kubepods-besteffort-pod` + fixtureUIDu + `.slice:cri-containerd:` + fixtureCID + `
0::/
`,
			want: want, ok: true,
		},
		{
			name: "v1 docker-in-docker kind node",
			file: "4:memory:/docker/" + otherCID + "/kubepods/besteffort/pod" + fixtureUID + "/" + fixtureCID + "\n",
			want: want, ok: true,
		},
		{name: "host process v2", file: "0::/system.slice/sshd.service\n"},
		{name: "host process v1 (this sandbox)", file: "9:name=systemd:/\n4:memory:/process_api/cdc97066e9aa66ef708462104e5a872c\n0::/\n"},
		{name: "docker container outside kubernetes", file: "0::/system.slice/docker-" + fixtureCID + ".scope\n"},
		{name: "pod cgroup itself, no container", file: "0::/kubepods/besteffort/pod" + fixtureUID + "\n"},
		{name: "cri-o conmon is not a container", file: "0::/kubepods.slice/kubepods-pod" + fixtureUIDu + ".slice/crio-conmon-" + fixtureCID + ".scope\n"},
		{name: "uppercase uid is not a kubelet name", file: "0::/kubepods/pod2C48913C-B29F-11E7-9350-020968147796/" + fixtureCID + "\n"},
		{name: "mixed uid separators", file: "0::/kubepods/pod2c48913c-b29f_11e7-9350-020968147796/" + fixtureCID + "\n"},
		{name: "pod prefix glued to a word", file: "0::/kubepods/xpod" + fixtureUID + "/" + fixtureCID + "\n"},
		{name: "short container id", file: "0::/kubepods/pod" + fixtureUID + "/abc\n"},
		{name: "empty", file: ""},
		{
			name:    "two containers",
			file:    "4:memory:/kubepods/pod" + fixtureUID + "/" + fixtureCID + "\n3:cpu:/kubepods/pod" + fixtureUID + "/" + otherCID + "\n",
			wantErr: "more than one container",
		},
		{name: "malformed line", file: "garbage\n", wantErr: "malformed cgroup line"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := parseCgroupFile([]byte(tt.file))
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.ok, ok)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestParseStartTime(t *testing.T) {
	for _, tt := range []struct {
		name    string
		stat    string
		want    uint64
		wantErr bool
	}{
		{
			name: "plain",
			stat: "4242 (envoy) S 1 4242 4242 0 -1 4194560 7 0 0 0 0 0 0 0 20 0 1 0 987654 1234567 89 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n",
			want: 987654,
		},
		{
			name: "command with spaces and parentheses",
			stat: "77 (my (odd) cmd) R 1 77 77 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 31337 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n",
			want: 31337,
		},
		{name: "truncated", stat: "77 (x) R 1 77", wantErr: true},
		{name: "no command", stat: "77 x R", wantErr: true},
		{name: "not a number", stat: "7 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 abc 0\n", wantErr: true},
		{name: "empty", stat: "", wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStartTime([]byte(tt.stat))
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}
