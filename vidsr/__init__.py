"""vidsr"""
