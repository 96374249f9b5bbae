module doctune/gotmpl

go 1.19
