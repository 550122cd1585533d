from kubeweft.proxy.nft_text import quote


def test_quote_keeps_the_text_nft_reads_as_is():
    text = "nodePort . index -> endpoint . port (tcp); default/web:http=80, @set +1 'x'"
    assert quote(text) == f'"{text}"'


def test_quote_cannot_end_the_string_or_the_command():
    assert quote('a"b\\c\nd{e}#f') == "\"a'b?c?d?e??f\""


def test_quote_cuts_below_the_kernels_comment_limit():
    assert len(quote("x" * 500).encode()) == 122
