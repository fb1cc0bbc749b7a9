{{/* Names. */}}

{{- define "lanyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name; the CA's Service carries it, so that the CA is reached at
<fullname>.<namespace>.svc (lanyard.lanyard.svc for a release named
lanyard in namespace lanyard, as in the docs).
*/}}
{{- define "lanyard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lanyard.caName" -}}
{{- printf "%s-ca" (include "lanyard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lanyard.agentName" -}}
{{- printf "%s-agent" (include "lanyard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lanyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels. Call with (dict "ctx" $ "component" "ca"). */}}
{{- define "lanyard.labels" -}}
helm.sh/chart: {{ include "lanyard.chart" .ctx }}
{{ include "lanyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: lanyard
{{- end }}

{{- define "lanyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lanyard.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "lanyard.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end }}
{{- end }}

{{/* The CA's address as agents and Istio dial it. */}}
{{- define "lanyard.caHost" -}}
{{ include "lanyard.fullname" . }}.{{ .Release.Namespace }}.svc
{{- end }}

{{- define "lanyard.caAddr" -}}
{{ include "lanyard.caHost" . }}:{{ .Values.ca.service.grpcPort }}
{{- end }}

{{/* Istio mode keeps the root in a ConfigMap of every namespace. */}}
{{- define "lanyard.istioPublishesRoot" -}}
{{- if and .Values.istio.enabled .Values.istio.kubernetes.enabled .Values.istio.kubernetes.publishRootCert }}true{{ end }}
{{- end }}

{{- define "lanyard.istiodCert" -}}
{{- if and .Values.istio.enabled .Values.istio.kubernetes.enabled .Values.istio.kubernetes.istiod.enabled }}true{{ end }}
{{- end }}

{{/* Whether the CA watches pods: for agents' k8s attestation, or Istio. */}}
{{- define "lanyard.caWatchesPods" -}}
{{- if or .Values.cluster.watchPods (and .Values.istio.enabled .Values.istio.kubernetes.enabled) }}true{{ end }}
{{- end }}

{{/*
The trust bundle ConfigMap the agents mount, as "name key"; see trustBundle
in values.yaml for the order.
*/}}
{{- define "lanyard.trustBundleRef" -}}
{{- if .Values.trustBundle.pem -}}
{{ include "lanyard.fullname" . }}-trust-bundle bundle.pem
{{- else if .Values.trustBundle.existingConfigMap -}}
{{ .Values.trustBundle.existingConfigMap }} {{ .Values.trustBundle.existingConfigMapKey }}
{{- else if include "lanyard.istioPublishesRoot" . -}}
{{ .Values.istio.kubernetes.rootCertConfigMap }} root-cert.pem
{{- else -}}
{{ include "lanyard.fullname" . }}-trust-bundle bundle.pem
{{- end }}
{{- end }}

{{/*
Whether dataDir holds something that must survive the pod: the SQLite store
(and with it the self-signed root). With postgres the store and a
self-signed root live in the database, dataDir only holds bundle.pem,
rewritten at start, and is an emptyDir (so replicas do not fight over one
ReadWriteOnce claim).
*/}}
{{- define "lanyard.caPersistent" -}}
{{- if and .Values.ca.persistence.enabled (eq .Values.store.type "sqlite") }}true{{ end }}
{{- end }}

{{/* The agents' caAddr: every replica behind the headless Service, balanced round robin. */}}
{{- define "lanyard.agentCAAddr" -}}
dns:///{{ include "lanyard.fullname" . }}-headless.{{ .Release.Namespace }}.svc:{{ .Values.ca.service.grpcPort }}
{{- end }}

{{/* Where dataDir lives. */}}
{{- define "lanyard.dataClaim" -}}
{{- default (printf "%s-data" (include "lanyard.caName" .)) .Values.ca.persistence.existingClaim }}
{{- end }}

{{/* Checks of value combinations the binary or Kubernetes would refuse later. */}}
{{- define "lanyard.validate" -}}
{{- $replicas := int .Values.ca.replicas }}
{{- if lt $replicas 1 }}
{{- fail "ca.replicas must be at least 1" }}
{{- end }}
{{- if not (has .Values.store.type (list "sqlite" "postgres")) }}
{{- fail (printf "store.type %q: want sqlite or postgres" .Values.store.type) }}
{{- end }}
{{- if not (has .Values.upstream.type (list "selfsigned" "disk" "vault")) }}
{{- fail (printf "upstream.type %q: want selfsigned, disk or vault" .Values.upstream.type) }}
{{- end }}
{{- if and (gt $replicas 1) (eq .Values.store.type "sqlite") }}
{{- fail (printf "ca.replicas=%d with store.type=sqlite: SQLite is a single-writer file on one volume, so it serves one replica only; use store.type=postgres for more replicas" $replicas) }}
{{- end }}
{{- if and (eq .Values.store.type "postgres") (eq .Values.upstream.type "selfsigned") (not .Values.upstream.selfsigned.sealKeySecret) }}
{{- fail "upstream.type=selfsigned with store.type=postgres needs upstream.selfsigned.sealKeySecret (the key that seals the replicas' shared root in the database)" }}
{{- end }}
{{- if and (not .Values.ca.persistence.enabled) (eq .Values.store.type "sqlite") }}
{{- fail "ca.persistence.enabled=false with store.type=sqlite: the issuance log and the self-signed root would be lost with the pod; enable persistence" }}
{{- end }}
{{- if and .Values.trustBundle.pem (not (contains "-----BEGIN CERTIFICATE-----" .Values.trustBundle.pem)) }}
{{- fail "trustBundle.pem holds no PEM certificate (pass the roots with --set-file trustBundle.pem=bundle.pem)" }}
{{- end }}
{{- if and (eq .Values.store.type "postgres") (not .Values.store.postgres.existingSecret) }}
{{- fail "store.type=postgres needs store.postgres.existingSecret (a Secret with the DSN)" }}
{{- end }}
{{- if and (eq .Values.upstream.type "disk") (not .Values.upstream.disk.existingSecret) }}
{{- fail "upstream.type=disk needs upstream.disk.existingSecret (a Secret with the CA certificate and key)" }}
{{- end }}
{{- if and (eq .Values.upstream.type "vault") (not .Values.upstream.vault.address) }}
{{- fail "upstream.type=vault needs upstream.vault.address" }}
{{- end }}
{{- $v := .Values.upstream.vault }}
{{- if and (eq .Values.upstream.type "vault") (eq $v.authMethod "kubernetes") (not $v.authRole) }}
{{- fail "upstream.vault.authMethod=kubernetes needs upstream.vault.authRole" }}
{{- end }}
{{- if and (eq .Values.upstream.type "vault") (eq $v.authMethod "approle") (or (not $v.authRoleID) (not $v.secretIDSecret)) }}
{{- fail "upstream.vault.authMethod=approle needs upstream.vault.authRoleID and secretIDSecret" }}
{{- end }}
{{- if and (eq .Values.upstream.type "vault") (eq $v.authMethod "token") (not $v.tokenSecret) }}
{{- fail "upstream.vault.authMethod=token needs upstream.vault.tokenSecret" }}
{{- end }}
{{- if not (has .Values.cluster.tokenVerification (list "tokenReview" "discovery")) }}
{{- fail (printf "cluster.tokenVerification %q: want tokenReview or discovery" .Values.cluster.tokenVerification) }}
{{- end }}
{{- if and (eq .Values.cluster.tokenVerification "discovery") (not .Values.cluster.discovery.issuer) }}
{{- fail "cluster.tokenVerification=discovery needs cluster.discovery.issuer" }}
{{- end }}
{{- if and .Values.cluster.checkBoundPod (not .Values.cluster.watchPods) }}
{{- fail "cluster.checkBoundPod needs cluster.watchPods (bound pods are looked up in the pod index)" }}
{{- end }}
{{- if and .Values.istio.enabled .Values.istio.trustedNodeServiceAccounts (not .Values.istio.kubernetes.enabled) }}
{{- fail "istio.trustedNodeServiceAccounts needs istio.kubernetes.enabled (pods are looked up on their nodes)" }}
{{- end }}
{{- if and .Values.ca.podDisruptionBudget.enabled (gt $replicas 1) (ge (int .Values.ca.podDisruptionBudget.minAvailable) $replicas) }}
{{- fail (printf "ca.podDisruptionBudget.minAvailable=%d must be below ca.replicas=%d, or no node could ever be drained" (int .Values.ca.podDisruptionBudget.minAvailable) $replicas) }}
{{- end }}
{{- end }}
