{{/*
The configuration files of `lanyard ca` and `lanyard agent`, in the exact
YAML cmd/lanyard parses (unknown keys are an error there). The chart tests
render them into integration/deploy/testdata/config, which cmd/lanyard
parses with its own loaders.
*/}}

{{- define "lanyard.caConfig" -}}
{{- $fullname := include "lanyard.fullname" . -}}
{{- $ns := .Release.Namespace -}}
# `lanyard ca --config` (cmd/lanyard/config.go). Unknown keys are an error.
trustDomain: {{ .Values.trustDomain | quote }}
listenAddr: ":8443"
httpAddr: ":9090"
dataDir: /var/lib/lanyard
bundleFile: /var/lib/lanyard/bundle.pem
servingDNSNames:
  - {{ $fullname }}
  - {{ $fullname }}.{{ $ns }}
  - {{ $fullname }}.{{ $ns }}.svc
  - {{ $fullname }}.{{ $ns }}.svc.{{ .Values.clusterDomain }}
  {{- range .Values.ca.extraServingDNSNames }}
  - {{ . | quote }}
  {{- end }}
ttl:
  default: {{ .Values.ca.ttl.default | quote }}
  max: {{ .Values.ca.ttl.max | quote }}
  agent: {{ .Values.ca.ttl.agent | quote }}
intermediate:
  ttl: {{ .Values.ca.intermediate.ttl | quote }}
  keyType: {{ .Values.ca.intermediate.keyType | quote }}
  curve: {{ .Values.ca.intermediate.curve | quote }}
  size: {{ int .Values.ca.intermediate.size }}
upstream:
  type: {{ .Values.upstream.type }}
  {{- if and (eq .Values.upstream.type "selfsigned") (eq .Values.store.type "postgres") }}
  selfsigned:
    sealKeyFile: /var/run/secrets/lanyard/root-seal/key
  {{- end }}
  {{- if eq .Values.upstream.type "disk" }}
  disk:
    certFile: /etc/lanyard/upstream/{{ .Values.upstream.disk.certKey }}
    keyFile: /etc/lanyard/upstream/{{ .Values.upstream.disk.keyKey }}
    bundleFile: {{ if .Values.upstream.disk.bundleKey }}/etc/lanyard/upstream/{{ .Values.upstream.disk.bundleKey }}{{ else }}""{{ end }}
  {{- end }}
  {{- if eq .Values.upstream.type "vault" }}
  {{- $v := .Values.upstream.vault }}
  vault:
    address: {{ $v.address | quote }}
    namespace: {{ $v.namespace | quote }}
    caFile: {{ if $v.caCertSecret }}/etc/lanyard/vault/ca.crt{{ else }}""{{ end }}
    mount: {{ $v.pkiMount | quote }}
    issuer: {{ $v.issuer | quote }}
    auth:
      method: {{ $v.authMethod }}
      mount: {{ $v.authMount | quote }}
      {{- if eq $v.authMethod "kubernetes" }}
      role: {{ $v.authRole | quote }}
      serviceAccountTokenFile: /var/run/secrets/lanyard/vault/token
      {{- else if eq $v.authMethod "approle" }}
      roleID: {{ $v.authRoleID | quote }}
      secretIDFile: /var/run/secrets/lanyard/vault/secret-id
      {{- else }}
      tokenFile: /var/run/secrets/lanyard/vault/token
      {{- end }}
  {{- end }}
store:
  type: {{ .Values.store.type }}
  {{- if eq .Values.store.type "sqlite" }}
  sqlite:
    path: /var/lib/lanyard/lanyard.db
  {{- else }}
  postgres:
    dsnFile: /var/run/secrets/lanyard/postgres/dsn
    maxConns: {{ int .Values.store.postgres.maxConns }}
    statementTimeout: {{ .Values.store.postgres.statementTimeout | quote }}
    {{- if .Values.store.postgres.tls.caSecret }}
    sslMode: verify-full
    caFile: /var/run/secrets/lanyard/postgres-ca/ca.crt
    {{- end }}
  {{- end }}
  retention:
    keep: {{ .Values.store.retention | quote }}
clusters:
  - name: {{ .Values.cluster.name | quote }}
    {{- if eq .Values.cluster.tokenVerification "tokenReview" }}
    tokenReview:
      kubeconfig: ""
      {{- with .Values.cluster.tokenReview.cacheTTL }}
      cacheTTL: {{ . | quote }}
      {{- end }}
    {{- else }}
    issuer: {{ .Values.cluster.discovery.issuer | quote }}
    discoveryURL: {{ default .Values.cluster.discovery.issuer .Values.cluster.discovery.url | quote }}
    caCertFile: {{ .Values.cluster.discovery.caCertFile | quote }}
    {{- end }}
    {{- if .Values.cluster.watchPods }}
    kubernetes:
      kubeconfig: ""
      {{- if .Values.cluster.checkBoundPod }}
      checkBoundPod: true
      {{- end }}
    {{- end }}
  {{- with .Values.extraClusters }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
agents:
  audience: {{ .Values.agent.tokenAudience | quote }}
  serviceAccounts:
    - {{ printf "%s/%s" $ns (include "lanyard.agentName" .) | quote }}
  trustUnixAttestation: false
policy:
  {{- $rules := .Values.ca.policy.rules | default list }}
  {{- if include "lanyard.istiodCert" . }}
  {{- $d := .Values.istio.kubernetes.istiod }}
  {{- $names := $d.dnsNames | default (list (printf "istiod.%s.svc" $d.namespace)) }}
  {{- $rules = prepend $rules (dict "namespace" $d.namespace "serviceAccount" $d.serviceAccount "dnsNames" $names) }}
  {{- end }}
  rules: {{- if $rules }}{{ toYaml $rules | nindent 4 }}{{ else }} []{{ end }}
  denyIdentities: {{- with .Values.ca.policy.denyIdentities }}{{ toYaml . | nindent 4 }}{{ else }} []{{ end }}
  denyAgents: {{- with .Values.ca.policy.denyAgents }}{{ toYaml . | nindent 4 }}{{ else }} []{{ end }}
profiling: {{ .Values.ca.profiling }}
log:
  level: {{ .Values.log.level | quote }}
  format: {{ .Values.log.format | quote }}
istio:
  enabled: {{ .Values.istio.enabled }}
  {{- if .Values.istio.enabled }}
  {{- $i := .Values.istio }}
  audience: {{ $i.audience | quote }}
  clusterAliases:
    {{- $aliases := $i.clusterAliases | default (dict "Kubernetes" .Values.cluster.name) }}
    {{- toYaml $aliases | nindent 4 }}
  trustedNodeServiceAccounts: {{- with $i.trustedNodeServiceAccounts }}{{ toYaml . | nindent 4 }}{{ else }} []{{ end }}
  rateLimit:
    perSecond: {{ $i.rateLimit.perSecond }}
    burst: {{ int $i.rateLimit.burst }}
    maxIdentities: {{ int $i.rateLimit.maxIdentities }}
  kubernetes:
    enabled: {{ $i.kubernetes.enabled }}
    {{- if $i.kubernetes.enabled }}
    kubeconfig: ""
    cluster: {{ .Values.cluster.name | quote }}
    publishRootCert: {{ $i.kubernetes.publishRootCert }}
    rootCertConfigMap: {{ $i.kubernetes.rootCertConfigMap | quote }}
    istiod:
      enabled: {{ $i.kubernetes.istiod.enabled }}
      {{- if $i.kubernetes.istiod.enabled }}
      {{- $d := $i.kubernetes.istiod }}
      namespace: {{ $d.namespace | quote }}
      serviceAccount: {{ $d.serviceAccount | quote }}
      secretName: {{ $d.secretName | quote }}
      dnsNames:
        {{- toYaml ($d.dnsNames | default (list (printf "istiod.%s.svc" $d.namespace))) | nindent 8 }}
      {{- with $d.ttl }}
      ttl: {{ . | quote }}
      {{- end }}
      {{- end }}
    {{- end }}
  {{- end }}
{{- end }}

{{- define "lanyard.agentConfig" -}}
# `lanyard agent --config` (cmd/lanyard/agent.go). Unknown keys are an error.
caAddr: {{ include "lanyard.agentCAAddr" . | quote }}
trustDomain: {{ .Values.trustDomain | quote }}
bundleFile: /etc/lanyard/bundle/bundle.pem
tokenFile: /var/run/secrets/lanyard/token
cluster: {{ .Values.cluster.name | quote }}
socketPath: {{ printf "%s/agent.sock" .Values.agent.socketDir | quote }}
socketMode: {{ .Values.agent.socketMode | quote }}
httpAddr: {{ printf ":%d" (int .Values.agent.httpPort) | quote }}
cacheFile: {{ if .Values.agent.cache.enabled }}/var/lib/lanyard-agent/svids.json{{ else }}""{{ end }}
svidTTL: {{ .Values.agent.svidTTL | quote }}
attestors:
  k8s:
    nodeName: ""  # $NODE_NAME, from the pod's spec.nodeName
    kubeconfig: ""
    procRoot: /proc
log:
  level: {{ .Values.log.level | quote }}
  format: {{ .Values.log.format | quote }}
{{- end }}
