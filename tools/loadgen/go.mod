module webstack/tools/loadgen

go 1.25
