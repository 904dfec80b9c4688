module github.com/rpstream/rpstream

go 1.26.8

require golang.org/x/sys v0.49.0

require google.golang.org/protobuf v1.36.11
