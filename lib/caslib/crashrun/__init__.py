"""crashrun"""
