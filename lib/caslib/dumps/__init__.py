"""dumps"""
